"""Taking event messages in the main process: intake, buffering and prefetch credit.

Each fresh plain message of a batched task is decoded and buffered; the buffer goes to
a pool process (`worker.batching.job`) when it holds LOYALTY_BATCH_SIZE events, or
when its oldest one has waited LOYALTY_BATCH_WAIT_MS; its messages are acknowledged
after the job answers, by the broker's acker (`worker.batching.acks`).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from weakref import WeakKeyDictionary

from celery import Celery, Task
from celery.worker.strategy import default as default_strategy

from loyalty import policy
from loyalty.errors import LoyaltyError
from tasks.table import BULK
from worker import raw_letters
from worker.app import ledger, settings
from worker.batching import acks
from worker.batching.job import ACK, REQUEUE, apply_batch

log = logging.getLogger("loyalty.batches")


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
        #: Acknowledges this consumer's batches, by its broker; renewed at each start.
        self.acker: acks.Acker = acks.Acker()
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
        # A new channel numbers its deliveries from 1 again: a new acker.
        self.acker = acks.for_connection(self.consumer.connection)
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
        """The consumer's one batcher, shared by all batched tasks. It asks the consumer
        (`worker.consumer.DeadLetteringConsumer.on_left_open`) to be told of every message
        the stock path leaves open, which a grouped ack must not cover."""
        batcher = _batchers.get(consumer)
        if batcher is None:
            batcher = _batchers[consumer] = cls(consumer)
            consumer.on_left_open(batcher.track)
        return batcher

    def track(self, message: Any) -> None:
        """Record a message that is still unacknowledged after its handler returned."""
        self.acker.track(message)

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
                self.acker.ack([m for m, v in zip(messages, verdicts, strict=True) if v == ACK])
            except (*errors, AttributeError) as exc:
                # The broker is gone, or the message's channel closed with an old
                # connection (kombu raises AttributeError then): every other ack would
                # fail the same way, and a burst of them trips kombu's reconnection.
                # Unacknowledged, the messages are delivered again; their effect is
                # already recorded, so that changes nothing.
                log.warning("broker connection lost while acknowledging a batch",
                            extra={"messages": len(messages), "error": str(exc)})
            finally:
                self.acker.forget(messages)
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


#: Each consumer's batcher (a worker has one consumer; tests build their own).
_batchers: WeakKeyDictionary[Any, Batcher] = WeakKeyDictionary()


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
        events = len(item["args"][0].get("events") or ()) if name == BULK \
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
