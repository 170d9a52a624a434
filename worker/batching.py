"""Taking event messages from the broker in batches, and applying each batch in one transaction.

Stock Celery runs one Request per message: the main process builds it, ships it
to a pool process, and the task commits one transaction. That machinery, not
PostgreSQL, bounds a worker to a few hundred events a second. Here the event
tasks get a Celery *strategy* of their own (the hook celery-batches also uses):

- the main process decodes each fresh message and buffers it;
- the buffer is flushed when it holds LOYALTY_BATCH_SIZE events, or when its
  oldest one has waited LOYALTY_BATCH_WAIT_MS, as one job to a pool process;
- the pool process validates every event, applies the valid ones with one
  set-based transaction (`Ledger.apply_events`), and retries or dead-letters
  each failed event on its own;
- the main process acknowledges the batch's messages only after that commit.

Anything unusual goes through the stock per-message path instead, which has its
own retry, crash counting and poison handling: a message with an ETA (a retry),
a re-delivered one (its batch may have crashed, so it must be tried alone), a
non-JSON (signed) body, or a body that is not a plain `[args, kwargs, embed]`.
A batch whose whole transaction fails, or whose pool process dies, is requeued
and its messages come back re-delivered, so one by one.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from celery import Celery, Task
from celery.worker.strategy import default as default_strategy
from kombu.transport.virtual import QoS as VirtualQoS

from loyalty import policy
from loyalty.errors import InvalidPayload, LoyaltyError, TransientError
from loyalty.ledger import EventOutcome
from schemas.events import (
    BULK_TYPES,
    TASKS,
    BulkEvents,
    OrderCompletedEvent,
    PayloadError,
    SignupEvent,
    parse_task_args,
    unknown_bulk_type,
)
from worker import raw_letters
from worker.app import ledger, settings

log = logging.getLogger("loyalty.batches")

BULK_TASK = "loyalty.events.bulk"
EVENT_TASKS = frozenset({"loyalty.events.signup", "loyalty.events.order_completed", BULK_TASK})

ACK, REQUEUE = "ack", policy.Action.REQUEUE.value


# -- the pool process: apply a batch ---------------------------------------------


@dataclass
class Event:
    """One event to apply: a single-event message, or one item of a bulk message."""

    message: int  # index of its message in the batch
    task: str  # the single-event task it belongs to
    message_id: str  # the Celery task id; `<bulk id>#<n>` for a bulk item
    payload: Any
    retries: int
    delivery_info: dict[str, Any]
    parsed: SignupEvent | OrderCompletedEvent | None = None
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
    # `applied`: events that took effect now (an EARN, or an outcome such as
    # no_points recorded for the first time); `duplicates` changed nothing.
    log.info("batch applied", extra={
        "messages": len(items), "events": len(events), **counts, "waited_ms": waited,
        "ms": round((time.perf_counter() - started) * 1000, 1)})
    return verdicts


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
    if item["task"] != BULK_TASK:
        if kwargs or len(args) != 1:
            raise InvalidPayload("the task takes exactly one positional argument, a JSON object")
        return [Event(index, item["task"], item["id"], args[0], item["retries"],
                      item["delivery_info"])]
    try:
        bulk = parse_task_args(BulkEvents, args, kwargs)
    except PayloadError as exc:
        raise InvalidPayload(str(exc)) from None
    return [Event(index, BULK_TYPES.get(entry.type, BULK_TASK), f"{item['id']}#{n}",
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
    from worker.app import app

    return app


# -- the main process: take messages, buffer them, hand batches to the pool -----


def prefetch(*, most_events: int, held_events: int, held_messages: int, per_message: float,
             held_bytes: int, max_bytes: int, max_message_bytes: int) -> int:
    """Messages the broker may have delivered to this process at once.

    What is held, plus the room left in events divided by the recent events per
    message, and never more than the room left in bytes allows if every message not
    received yet were as large as a message may be (LOYALTY_MAX_PREFETCH_BYTES).
    """
    room = max(0, most_events - held_events)
    want = min(most_events, max(1, held_messages + int(room / per_message)))
    room_bytes = max(0, max_bytes - held_bytes)
    return min(want, max(1, held_messages + room_bytes // max_message_bytes))


class Batcher:
    """One per consumer: buffers fresh event messages of all event tasks together."""

    def __init__(self, consumer: Any) -> None:
        s = settings()
        self.consumer = consumer
        self.size = s.batch_size
        self.wait = s.batch_wait_ms / 1000
        self.time_limit = s.task_time_limit
        self.items: list[dict[str, Any]] = []
        self.messages: list[Any] = []
        self.events = 0
        self.inflight = 0
        self.oldest = 0.0
        self.taken_at = 0.0
        self.entry: Any = None
        #: Events and messages taken into batches and not settled yet; events per
        #: message lately (a max that decays): what `_credit` sizes the prefetch by.
        self.held_events = 0
        self.held_messages = 0
        self.held_bytes = 0
        self.max_message_bytes = s.max_message_bytes
        self.max_prefetch_bytes = s.max_prefetch_bytes
        self.per_message = 1.0
        self.most_events = max(s.prefetch_multiplier, 2 * s.batch_size)
        #: Every message taken on the current channel and not settled yet, in delivery
        #: order (so by delivery tag), whichever path it took: see `_ack`.
        self.open: dict[Any, Any] = {}
        self.open_limit = _OPEN_LIMIT
        #: On quorum queues Celery uses per-consumer prefetch, which RabbitMQ fixes when
        #: the consumer starts: the prefetch is set once, to its ceiling (see `start`).
        self.static = False

    def start(self) -> None:
        """(Re)arm at every consumer start: a lost connection cancels the consumer's timers.

        What is still buffered came from the dead channel, and is applied all the same:
        the broker delivers it again (a duplicate, which changes nothing): RabbitMQ when
        the channel closed, Redis once the old channel's processing lists are swept.
        """
        if self.entry is not None:
            try:
                self.consumer.timer.cancel(self.entry)
            except Exception:  # already cancelled with the old connection
                log.debug("batch timer already cancelled")
        self.open, self.open_limit = {}, _OPEN_LIMIT  # a new channel numbers from 1 again
        if _quorum(self.consumer):
            # Per-consumer prefetch is fixed at consume time: start at the ceiling `_credit`
            # would allow for single events; the bytes bound still holds for bulk ones.
            self.static = True
            most = self.most_events * max(getattr(self.consumer.pool, "num_processes", 1), 1)
            self.consumer.initial_prefetch_count = max(1, min(
                most, self.max_prefetch_bytes // self.max_message_bytes))
        if self.items:
            log.warning("connection restarted; applying the messages still buffered",
                        extra={"messages": len(self.items)})
            self.flush()
        self.entry = self.consumer.timer.call_repeatedly(max(self.wait / 2, 0.001), self._tick)

    @classmethod
    def of(cls, consumer: Any) -> Batcher:
        batcher: Batcher | None = getattr(consumer, "_loyalty_batcher", None)
        if batcher is None:
            batcher = cls(consumer)
            consumer._loyalty_batcher = batcher
        return batcher

    def track(self, message: Any) -> None:
        """Record a message that is still unacknowledged after its handler returned."""
        self.open[message.delivery_tag] = message
        if len(self.open) > self.open_limit:  # settled stragglers behind a long-held message
            self.open = {t: m for t, m in self.open.items() if not m.acknowledged}
            # Still that many open (a flood of retries waiting for their ETA): sweep
            # again only once it has doubled, not at every message.
            self.open_limit = max(_OPEN_LIMIT, 2 * len(self.open))

    def add(self, item: dict[str, Any], events: int, message: Any) -> None:
        self.track(message)
        if not self.items:
            self.oldest = time.monotonic()
            self.taken_at = time.time()
        self.items.append(item)
        self.messages.append(message)
        self.events += events
        self.held_events += events
        self.held_messages += 1
        self.held_bytes += item.get("size", 0)
        self.per_message = max(float(events), self.per_message * 0.99)
        self._credit()
        if self.events >= self.size:
            self.flush()

    def _credit(self) -> None:
        """Size the prefetch in events, not messages: two batches per pool process.

        The broker counts messages, and a bulk message holds up to 1,000 events:
        a prefetch of 2,000 single events would let 2,000 bulk messages (two million
        events) into this process. So the prefetch is what is held plus the room
        left divided by the recent events per message. (Celery's own adjustments
        for messages with an ETA are overridden; they are rare here.)
        """
        qos = getattr(self.consumer, "qos", None)
        if qos is None or self.static:
            return
        most = self.most_events * max(getattr(self.consumer.pool, "num_processes", 1), 1)
        want = prefetch(most_events=most, held_events=self.held_events,
                        held_messages=self.held_messages, per_message=self.per_message,
                        held_bytes=self.held_bytes, max_bytes=self.max_prefetch_bytes,
                        max_message_bytes=self.max_message_bytes)
        if qos.value != want:
            qos.value = want  # Celery's loop sends it to the broker (basic.qos)

    def _tick(self) -> None:
        # While every pool process is busy, a waiting batch keeps filling instead of
        # queueing behind them: under load batches grow, and each commit carries more.
        if self.items and time.monotonic() - self.oldest >= self.wait \
                and self.inflight < getattr(self.consumer.pool, "num_processes", 1):
            self.flush()

    def _finished(self) -> None:
        self.inflight -= 1
        self._tick()

    def _ack(self, messages: list[Any]) -> str:
        """Acknowledge a batch's messages with one command where the broker allows it.

        One ack per message costs the main process a socket write (RabbitMQ) or a
        Redis round trip each (docs/performance.md). RabbitMQ's `multiple` ack settles
        every unsettled delivery up to a tag, so it is sent only when no other open
        message of this channel (another batch, the buffer, a retry waiting for its
        ETA, an admin task) sits below the batch's highest tag; otherwise one by one.
        kombu's Redis transport ignores `multiple`; there the batch's unacked records
        are removed in one pipeline instead. Returns which way it went.
        """
        driver = self.consumer.connection.transport.driver_type
        if len(messages) > 1 and driver == "amqp" and self._covers_only(messages):
            max(messages, key=lambda m: m.delivery_tag).ack(multiple=True)
            mode = "multiple"
        elif len(messages) > 1 and driver == "redis" \
                and all(m.channel is messages[0].channel for m in messages):
            _redis_ack(messages)
            mode = "pipeline"
        else:
            for message in messages:
                message.ack()
            return "each"
        for message in messages:
            message._state = "ACK"  # what kombu's own ack records
        return mode

    def _covers_only(self, messages: list[Any]) -> bool:
        """Whether a multiple ack up to the messages' highest tag covers only them."""
        mine = {m.delivery_tag for m in messages}
        if any(self.open.get(m.delivery_tag) is not m for m in messages):
            return False  # taken on an older channel
        top = max(mine)
        for tag, message in list(self.open.items()):
            if tag > top:
                break
            if tag in mine:
                continue
            if not message.acknowledged:
                return False
            del self.open[tag]
        return True

    def flush(self) -> None:
        items, messages, events = self.items, self.messages, self.events
        self.items, self.messages, self.events = [], [], 0
        errors = self.consumer.connection_errors
        self.inflight += 1

        def settle(verdicts: list[str]) -> None:
            try:
                # Requeues first: a grouped ack must not cover them.
                for message, verdict in zip(messages, verdicts, strict=True):
                    if verdict != ACK:
                        message.reject(requeue=True)
                self._ack([m for m, v in zip(messages, verdicts, strict=True) if v == ACK])
            except (*errors, AttributeError) as exc:
                # The broker is gone, or the message's channel closed with an old
                # connection (kombu raises AttributeError then): every other ack would
                # fail the same way, and a burst of them trips kombu's reconnection.
                # Unacknowledged, the messages are delivered again; their effect is
                # already recorded, so that changes nothing.
                log.warning("broker connection lost while acknowledging a batch",
                            extra={"messages": len(messages), "error": str(exc)})
            finally:
                for settled in messages:
                    tag = settled.delivery_tag
                    if self.open.get(tag) is settled:
                        del self.open[tag]
                self.held_events -= events
                self.held_messages -= len(messages)
                self.held_bytes -= sum(item.get("size", 0) for item in items)
                self._credit()

        def done(verdicts: list[str]) -> None:
            self._finished()
            settle(verdicts)

        def failed(exc_info: Any) -> None:
            # The pool process died (a crash, the OOM killer) or hit the time limit.
            # Each message's crash is counted; requeued, they come back re-delivered and
            # so go one by one, where the one that crashes again ends as poison.
            self._finished()
            exc = getattr(exc_info, "exception", exc_info)
            detail = f"{type(exc).__name__}: {exc}"
            log.error("batch lost with its worker process, requeueing its messages",
                      extra={"messages": len(items), "error": detail})
            try:
                crashes = ledger().record_crashes({i["id"]: i["task"] for i in items}, detail)
            except LoyaltyError as err:
                log.error("cannot count the crash", extra={"error": str(err)})
                crashes = {}
            limits = policy.Limits.of(settings())
            settle([_after_crash(message, crashes.get(item["id"], 0), limits, detail)
                    for item, message in zip(items, messages, strict=True)])

        self.consumer.pool.apply_async(
            apply_batch, args=(items, self.taken_at), callback=done, error_callback=failed,
            timeout=self.time_limit, soft_timeout=None)


def _quorum(consumer: Any) -> bool:
    """Whether Celery consumes quorum queues here (and so uses a static prefetch)."""
    from celery.utils.quorum_queues import detect_quorum_queues

    connection = getattr(consumer, "connection", None)
    if connection is None or not consumer.app.conf.worker_detect_quorum_queues:
        return False
    return bool(detect_quorum_queues(consumer.app, connection.transport.driver_type)[0])


def _after_crash(message: Any, crashes: int, limits: policy.Limits, detail: str) -> str:
    """ACK once the message is kept as poison, else REQUEUE: it comes back alone."""
    decision = policy.after_crash(crashes, limits, detail)
    if decision.action is not policy.Action.DEAD_LETTER:
        return REQUEUE
    try:
        raw_letters.store(message, "poison", decision.detail)
    except LoyaltyError:
        return REQUEUE
    return ACK


#: Past this many open messages, settled ones are swept out of `Batcher.open`.
_OPEN_LIMIT = 20_000


def _redis_ack(messages: list[Any]) -> None:
    """What kombu's Redis QoS.ack does per message, for all of them in one pipeline."""
    channel = messages[0].channel
    qos = channel.qos
    tags = [m.delivery_tag for m in messages]
    if hasattr(qos, "ack_many"):  # worker.redis_reliable: one round trip for the batch
        qos.ack_many(tags)
        return
    with channel.conn_or_acquire() as client:
        client.pipeline().zrem(qos.unacked_index_key, *tags) \
            .hdel(qos.unacked_key, *tags).execute()
    for tag in tags:
        VirtualQoS.ack(qos, tag)


def strategy(task: Task, app: Celery, consumer: Any, **kwargs: Any) -> Any:
    """Celery's strategy hook for the event tasks: batch fresh plain messages, pass the rest."""
    fallback = default_strategy(task, app, consumer, **kwargs)
    if settings().batch_size <= 1:
        return fallback
    batcher = Batcher.of(consumer)
    batcher.start()  # strategies are built at each consumer (re)start
    name = task.name

    def task_message_handler(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any,
                             **kw: Any) -> Any:
        item = _batchable(name, message)
        if item is None:
            return fallback(message, body, ack, reject, callbacks, **kw)
        events = len(item["args"][0].get("events") or ()) if name == BULK_TASK \
            and item["args"] and isinstance(item["args"][0], dict) else 1
        batcher.add(item, max(events, 1), message)
        return None

    return task_message_handler


def _decode(message: Any) -> Any:
    """The body as plain JSON, decoded by the C parser alone where that is the same thing.

    kombu's decoder wraps every body in its serializer registry and an object hook
    for its own tagged types (`{"__type__": "datetime", ...}`, which a Python
    producer's datetime becomes), which is costly (docs/performance.md). A body that
    holds such a tag, is not UTF-8, or does not parse goes through kombu, which
    decodes it the same way as before or raises into the consumer, which keeps it; so
    does every body when the worker does not accept plain JSON (message signing).
    """
    raw, accept = message.body, message.accept
    # Only where the worker accepts plain JSON at all: with message signing on, an
    # unsigned JSON body must reach kombu, which refuses it (and the consumer keeps it).
    if (accept is None or "application/json" in accept) \
            and message.content_encoding in ("utf-8", "utf8") and isinstance(raw, bytes | str) \
            and ("__type__" not in raw if isinstance(raw, str) else b"__type__" not in raw):
        try:
            return json.loads(raw)
        except ValueError:
            pass
    return message.decode()


def _batchable(name: str, message: Any) -> dict[str, Any] | None:
    headers = message.headers
    if not isinstance(headers, dict) or message.content_type != "application/json":
        return None
    if headers.get("eta") or headers.get("expires") or headers.get("retries") \
            or not isinstance(headers.get("id"), str) or headers.get("task") != name:
        return None
    delivery_info = message.delivery_info or {}
    if delivery_info.get("redelivered"):
        return None
    body = _decode(message)
    if not (isinstance(body, list) and len(body) == 3 and isinstance(body[0], list)
            and isinstance(body[1], dict) and isinstance(body[2], dict)):
        return None
    embed = body[2]
    if any(embed.get(k) for k in ("callbacks", "errbacks", "chain", "chord")):
        return None
    return {"task": name, "id": headers["id"], "args": body[0], "kwargs": body[1],
            "retries": 0, "size": len(message.body or b""),
            "delivery_info": {"exchange": delivery_info.get("exchange"),
                              "routing_key": delivery_info.get("routing_key")}}
