"""One message at a time: parse it, apply it, and carry out the outcome policy.

What a failure leads to (retry, dead letter) is decided by `loyalty.policy`;
this module only applies the decision with Celery's means. No exception escapes
to crash a worker process.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from celery import Task
from celery.exceptions import Reject, SoftTimeLimitExceeded

from loyalty import metrics, policy
from loyalty.errors import InvalidPayload, LoyaltyError, TransientError
from loyalty.ledger import Ledger
from schemas.events import Contract, PayloadError, parse_task_args
from tasks.table import BY_NAME
from worker.app import ledger, settings

log = logging.getLogger("loyalty.tasks")

M = TypeVar("M", bound=Contract)


def perform(task: Task, *args: Any, **kwargs: Any) -> Any:
    """The body of every task: its entry in `tasks.table` says what to parse and apply."""
    entry = BY_NAME[task.name]
    if entry.handler is None:  # the bulk task: its events go through the batch job
        return run_bulk(task, args, kwargs)
    result = run(task, entry.model, entry.handler, args, kwargs)
    if entry.on_dead_letter is not None and isinstance(result, dict) \
            and result.get("status") == "dead_lettered":
        return entry.on_dead_letter(result)
    return result


def run(task: Task, model: type[M], apply: Callable[[Ledger, M], Any],
        args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Apply one message; on failure retry or dead-letter, and return a JSON-able result."""
    retries = task.request.retries or 0
    kind, started = task.name.rsplit(".", 1)[-1], time.perf_counter()
    try:
        try:
            message = parse_task_args(model, args, kwargs)
        except PayloadError as exc:
            raise InvalidPayload(str(exc)) from None
        result = apply(ledger(), message)
    except Exception as exc:
        if not isinstance(exc, LoyaltyError | SoftTimeLimitExceeded):
            log.exception("unexpected failure", extra={"task": task.name,
                                                       "task_id": task.request.id})
        metrics.observe_batch([(kind, getattr(exc, "reason", "error"), None)],
                              time.perf_counter() - started, 1)
        decision = policy.after_failure(exc, retries, _limits(),
                                        timed_out=isinstance(exc, SoftTimeLimitExceeded))
        return settle(task, decision, exc, args, kwargs)
    payload = result.as_dict() if hasattr(result, "as_dict") else result
    if hasattr(result, "outcome"):  # an event, not an adjustment or a replay
        metrics.observe_batch([(kind, "duplicate" if result.duplicate else result.outcome,
                                getattr(message, "occurred_at", None))],
                              time.perf_counter() - started, 1)
    _log_outcome(task, payload)
    return payload


def settle(task: Task, decision: policy.Decision, exc: BaseException, args: tuple[Any, ...],
           kwargs: dict[str, Any]) -> Any:
    """Carry out the policy's decision for a task message that was not applied."""
    if decision.action is policy.Action.RETRY:
        return retry(task, exc, decision.delay)
    assert decision.action is policy.Action.DEAD_LETTER and decision.reason is not None
    return dead_letter(task, args, kwargs, decision.reason, decision.detail)


def _limits() -> policy.Limits:
    return policy.Limits.of(settings())


def _log_outcome(task: Task, payload: Any) -> None:
    """One line that says what happened, with the facts and not whole documents."""
    where = {"task": task.name, "task_id": task.request.id}
    if not isinstance(payload, dict):
        log.info("processed", extra=where)
    elif "outcome" in payload:  # an event
        if payload.get("outcome") == "duplicate_order_changed" and not payload.get("duplicate"):
            log.warning("order re-sent with another total", extra={**where, **payload})
        else:
            log.info("duplicate" if payload.get("duplicate") else "applied",
                     extra={**where, **payload})
    elif "status" in payload and "account" in payload:  # an adjustment
        account = payload.get("account") or {}
        log.info(f"adjustment {payload['status']}", extra={
            **where, "status": payload["status"], "reason": payload.get("reason"),
            "transaction_id": payload.get("transaction_id"), "account_id": account.get("id"),
            "contact_id": account.get("contact_id"),
            "balance": (account.get("points") or {}).get("balance"),
            "revision": account.get("revision")})
    elif "summary" in payload:  # a replay
        log.info("replay done", extra={**where, "dry_run": payload.get("dry_run"),
                                       **{f"replay_{k}": v for k, v in payload["summary"].items()}})
    else:
        log.info("processed", extra=where)


def retry(task: Task, exc: BaseException, delay: float) -> Any:
    metrics.retried(getattr(exc, "reason", type(exc).__name__))
    log.warning("not applied yet, retrying", extra={
        "task": task.name, "task_id": task.request.id, **_about(task.request.args),
        "reason": getattr(exc, "reason", type(exc).__name__), "retries": task.request.retries,
        "delay_s": round(delay, 3), "error": str(exc)})
    try:
        raise task.retry(countdown=delay, max_retries=None)
    except Reject as refused:
        # Celery rejects the message for good (requeue=False) when the retry it published
        # failed: no broker, or RabbitMQ did not confirm it. Keep the original instead, and
        # slow the loop while the broker refuses.
        log.error("cannot publish a retry, requeueing", extra={
            "task": task.name, "task_id": task.request.id, "error": str(refused.reason)})
        time.sleep(1)
        decision = policy.retry_unpublished()
        raise Reject(refused.reason, requeue=decision.action is policy.Action.REQUEUE) from None


def _about(args: Any) -> dict[str, Any]:
    payload = args[0] if isinstance(args, list | tuple) and len(args) == 1 else None
    return policy.about(payload)


def dead_letter(task: Task, args: tuple[Any, ...], kwargs: dict[str, Any], reason: str,
                detail: str) -> dict[str, Any]:
    request = task.request
    letter = policy.task_letter(task.name, request.id, args, kwargs, reason, detail,
                                retries=request.retries, delivery_info=request.delivery_info or {},
                                origin=getattr(request, "origin", None), with_origin=True)
    try:
        letter_id = ledger().add_dead_letter(**letter.fields())
    except TransientError as exc:
        # The store itself is down: keep the message alive on the broker instead.
        wait = policy.store_unavailable(request.retries or 0, _limits(), in_task=True)
        return retry(task, exc, wait.delay)
    log.warning("dead-lettered", extra={"task": task.name, "task_id": request.id,
                                         **_about(args), "reason": reason, "detail": detail,
                                         "dead_letter_id": letter_id})
    return {"status": "dead_lettered", "reason": reason, "detail": detail,
            "dead_letter_id": letter_id}


def run_bulk(task: Task, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A bulk message taken alone (a re-delivery, or batching off): the batch path, once."""
    from worker.batching import job

    request = task.request
    item = {"task": task.name, "id": request.id, "args": list(args), "kwargs": kwargs,
            "retries": request.retries or 0,
            "body": json.dumps([list(args), kwargs, {}], default=repr),
            "delivery_info": request.delivery_info or {}}
    if job.apply_batch([item]) == [job.ACK]:
        return {"status": "applied"}
    # The batch was requeued: its database stayed away.
    unavailable = TransientError("the database is unavailable")
    decision = policy.after_failure(unavailable, request.retries or 0, _limits())
    if decision.action is policy.Action.DEAD_LETTER:
        decision = replace(decision, detail="the database stayed unavailable")
    return settle(task, decision, unavailable, args, kwargs)
