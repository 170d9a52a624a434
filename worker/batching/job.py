"""The batch job: what runs in a pool process for each batch.

It validates every event, applies the valid ones in one set-based transaction
(`Ledger.apply_events`), and retries or dead-letters each failed event on its own, by
the outcome policy (`loyalty.policy`). It answers ACK or REQUEUE for each message; the
main process (`worker.batching.intake`) acknowledges accordingly.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from celery import Celery

from loyalty import metrics, policy
from loyalty.errors import InvalidPayload, LoyaltyError, TransientError
from loyalty.ledger import EventOutcome
from loyalty.ledger.earning import Event as LedgerEvent
from schemas.events import (
    BULK_TYPES,
    TASKS,
    BulkEvents,
    PayloadError,
    parse_task_args,
    unknown_bulk_type,
)
from tasks.table import BULK
from worker.app import ledger, settings

log = logging.getLogger("loyalty.batches")

ACK, REQUEUE = "ack", policy.Action.REQUEUE.value


@dataclass
class Event:
    """One event to apply: a single-event message, or one item of a bulk message."""

    message: int  # index of its message in the batch
    task: str  # the single-event task it belongs to
    message_id: str  # the Celery task id; `<bulk id>#<n>` for a bulk item
    payload: Any
    retries: int
    delivery_info: dict[str, Any]
    parsed: LedgerEvent | None = None
    #: Why the event cannot even be parsed (a bulk item of an unknown type).
    error: str | None = None


def apply_batch(items: list[dict[str, Any]], taken_at: float | None = None) -> list[str]:
    """Apply the messages of one batch; returns ACK or REQUEUE for each message.

    `taken_at` (epoch seconds) is when the worker took the batch's first message: the
    log line reports how long it waited before it was applied, buffering included.

    Runs in a pool process. Never raises for a message's content: a bad event is
    dead-lettered, an event that is not applicable yet is published again for
    later, and only a failure of the whole transaction requeues the batch.
    """
    verdicts = [ACK] * len(items)
    #: What happened to the batch's events, for its log line: each lands in one count.
    counts = dict.fromkeys(("applied", "duplicates", "dead_lettered", "retried", "requeued"), 0)
    events: list[Event] = []
    for index, item in enumerate(items):
        try:
            events += _expand(index, item)
        except InvalidPayload as exc:
            counts[_dead_letter(Event(index, item["task"], item["id"], None, item["retries"],
                                      item["delivery_info"]), exc.reason, str(exc),
                                args=item["args"], kwargs=item["kwargs"],
                                verdicts=verdicts)] += 1
    valid = []
    for event in events:
        if event.error is not None:
            counts[_settle(event, InvalidPayload(event.error), verdicts)] += 1
            continue
        try:
            model = TASKS[event.task][1]
            event.parsed = parse_task_args(model, [event.payload], {})  # type: ignore[assignment]
            valid.append(event)
        except PayloadError as exc:
            counts[_settle(event, InvalidPayload(str(exc)), verdicts)] += 1
    if not valid:
        if events or items:
            log.info("batch applied", extra={"messages": len(items), "events": len(events),
                                              **counts})
        return verdicts
    started = time.perf_counter()
    waited = round((time.time() - taken_at) * 1000, 1) if taken_at else None
    try:
        results: list[EventOutcome | LoyaltyError | None] = list(
            ledger().apply_events([e.parsed for e in valid]))  # type: ignore[misc]
    except Exception as exc:
        decision = policy.after_batch_failure(exc)
        if decision.action is policy.Action.REQUEUE:  # the messages wait on the broker
            log.warning("batch failed, requeueing its messages", extra={
                "events": len(valid), "error": str(exc)})
            for event in valid:
                verdicts[event.message] = REQUEUE
            return verdicts
        log.error("batch refused, applying its events one by one", exc_info=True,
                  extra={"events": len(valid), "error": str(exc)})
        results = [_alone(event) for event in valid]
    for event, result in zip(valid, results, strict=True):
        if result is None:
            verdicts[event.message] = REQUEUE
            counts["requeued"] += 1
        elif isinstance(result, EventOutcome):
            counts["duplicates" if result.duplicate else "applied"] += 1
            if result.outcome == "duplicate_order_changed" and not result.duplicate:
                log.warning("order re-sent with another total", extra={
                    "task": event.task, "task_id": event.message_id, **result.as_dict()})
            elif log.isEnabledFor(logging.DEBUG):
                log.debug("duplicate" if result.duplicate else "applied", extra={
                    "task": event.task, "task_id": event.message_id, **result.as_dict()})
        else:
            counts[_settle(event, result, verdicts)] += 1
    if metrics.enabled():
        metrics.observe_batch(_observed(valid, results), time.perf_counter() - started, len(valid))
    # `applied`: events that took effect now (an EARN, or an outcome such as
    # no_points recorded for the first time); `duplicates` changed nothing.
    log.info("batch applied", extra={
        "messages": len(items), "events": len(events), **counts, "waited_ms": waited,
        "ms": round((time.perf_counter() - started) * 1000, 1)})
    return verdicts


def _observed(events: list[Event], results: list[EventOutcome | LoyaltyError | None]
              ) -> list[tuple[str, str, Any]]:
    """(type, outcome, occurred_at) of each event, for the metrics."""
    return [(e.task.rsplit(".", 1)[-1],
             "requeued" if r is None else r.reason if isinstance(r, LoyaltyError)
             else "duplicate" if r.duplicate else r.outcome,
             getattr(e.parsed, "occurred_at", None)) for e, r in zip(events, results, strict=True)]


class InternalError(LoyaltyError):
    reason = "internal_error"


def _alone(event: Event) -> EventOutcome | LoyaltyError | None:
    """One event in its own transaction; None when the database is away."""
    try:
        return ledger().apply_events([event.parsed])[0]  # type: ignore[list-item]
    except TransientError:
        return None
    except LoyaltyError as exc:
        return exc
    except Exception as exc:  # a bug must not lose the event: it is dead-lettered
        return InternalError(f"{type(exc).__name__}: {exc}")


def _expand(index: int, item: dict[str, Any]) -> list[Event]:
    args, kwargs = item["args"], item["kwargs"]
    if item["task"] != BULK:
        if kwargs or len(args) != 1:
            raise InvalidPayload("the task takes exactly one positional argument, a JSON object")
        return [Event(index, item["task"], item["id"], args[0], item["retries"],
                      item["delivery_info"])]
    try:
        bulk = parse_task_args(BulkEvents, args, kwargs)
    except PayloadError as exc:
        raise InvalidPayload(str(exc)) from None
    return [Event(index, BULK_TYPES.get(entry.type, BULK), f"{item['id']}#{n}",
                  entry.payload if entry.type in BULK_TYPES else entry.model_dump(),
                  item["retries"], item["delivery_info"],
                  error=None if entry.type in BULK_TYPES else unknown_bulk_type(entry.type))
            for n, entry in enumerate(bulk.events)]


def _settle(event: Event, exc: LoyaltyError, verdicts: list[str]) -> str:
    """Carry out the policy's decision for an event that was not applied.

    Returns what happened to it: "retried", "dead_lettered" or "requeued".
    """
    decision = policy.after_failure(exc, event.retries, policy.Limits.of(settings()))
    if decision.action is policy.Action.RETRY:
        return _retry_later(event, exc, decision.delay, verdicts)
    assert decision.reason is not None
    return _dead_letter(event, decision.reason, decision.detail, verdicts=verdicts)


def _retry_later(event: Event, exc: LoyaltyError, delay: float, verdicts: list[str]) -> str:
    """Publish the event again, alone and due later, as Celery's retry of its task would."""
    try:
        # Briefly: a batch that blocks on a broker that is down would outlive its soft
        # time limit; the original message is requeued instead.
        _app().send_task(event.task, args=[event.payload], task_id=event.message_id,
                         retries=event.retries + 1, countdown=delay,
                         queue=TASKS[event.task][0],
                         retry_policy={"max_retries": 1, "interval_start": 0,
                                       "interval_step": 0.2, "interval_max": 0.2})
    except Exception as err:  # the broker is unreachable: keep the original message
        log.error("cannot publish a retry, requeueing", extra={"task_id": event.message_id,
                                                               "error": str(err)})
        verdicts[event.message] = policy.retry_unpublished().action.value
        return "requeued"
    metrics.retried(exc.reason)
    log.warning("not applied yet, retrying", extra={
        "task": event.task, "task_id": event.message_id, **policy.about(event.payload),
        "reason": exc.reason, "retries": event.retries, "delay_s": round(delay, 3),
        "error": str(exc)})
    return "retried"


def _dead_letter(event: Event, reason: str, detail: str, *, verdicts: list[str],
                 args: list[Any] | None = None, kwargs: dict[str, Any] | None = None) -> str:
    """Keep the event as a dead letter; returns "dead_lettered", or "requeued" if the
    store is down. `args` and `kwargs`: the whole message's, when it is not one event."""
    letter = policy.task_letter(event.task, event.message_id,
                                [event.payload] if args is None else args, kwargs or {},
                                reason, detail, retries=event.retries,
                                delivery_info=event.delivery_info)
    try:
        letter_id = ledger().add_dead_letter(**letter.fields())
    except TransientError as exc:
        log.error("cannot dead-letter yet, requeueing", extra={"task_id": event.message_id,
                                                               "error": str(exc)})
        verdicts[event.message] = policy.store_unavailable(
            event.retries, policy.Limits.of(settings()), in_task=False).action.value
        return "requeued"
    log.warning("dead-lettered", extra={"task": event.task, "task_id": event.message_id,
                                         **policy.about(event.payload), "reason": reason,
                                         "detail": detail, "dead_letter_id": letter_id})
    return "dead_lettered"


def _app() -> Celery:
    from worker.app import current

    return current()
