"""Producer helper: publish events exactly as any Celery client would.

It needs no worker code and no database: the payload is checked against the
public contract before it leaves, then sent as the same JSON, protocol-2 message
that `send_task` would send. `send_bulk` packs many events into `loyalty.events.bulk`.

    from loyalty.publish import Publisher
    with Publisher("redis://127.0.0.1:6379/0") as publisher:
        publisher.order_completed(contact_id="c-1", order_id="o-1", total="49.90", currency="USD")
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from celery import Celery
from celery.result import AsyncResult
from pydantic import ValidationError

from loyalty.errors import InvalidPayload, PublishError
from loyalty.ids import uuid7
from loyalty.settings import Settings
from loyalty.signing import enable_signing
from schemas.events import (
    BULK_MAX_EVENTS,
    BULK_TYPES,
    TASK_OF,
    TASKS,
    ActivityEvent,
    AdjustPointsRequest,
    BulkEvents,
    CreateAccountRequest,
    EarnPointsRequest,
    OrderCompletedEvent,
    OrderRefundedEvent,
    RedeemPointsRequest,
    RefundTransactionRequest,
    SignupEvent,
    describe_errors,
    set_max_future_skew,
)

#: Celery's default cap on a task's argument repr.
_REPR_MAX = 1024


def _why(exc: BaseException) -> str:
    """What went wrong, in words: kombu re-raises py-amqp's MessageNacked as an empty
    OperationalError."""
    seen: BaseException | None = exc
    while seen is not None:
        if type(seen).__name__ == "MessageNacked":
            return "the broker refused the message (not confirmed: a queue at its length limit?)"
        seen = seen.__cause__ or seen.__context__
    return str(exc) or type(exc).__name__


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Publisher:
    def __init__(self, broker_url: str | None = None, result_backend: str | None = None,
                 settings: Settings | None = None) -> None:
        """URLs default to the LOYALTY_* settings; so does message signing, when configured."""
        settings = settings or Settings.from_env()
        set_max_future_skew(settings.max_future_skew)
        self.app = Celery("loyalty-producer", broker=broker_url or settings.broker_url,
                          backend=result_backend or settings.result_backend,
                          set_as_current=False)
        self.app.conf.update(
            task_serializer="json",
            accept_content=["json"],
            result_accept_content=["json"],
            broker_connection_retry_on_startup=True,
            broker_connection_max_retries=3,
            # The queue type the worker declares (LOYALTY_QUEUE_TYPE): RabbitMQ refuses a
            # declaration of the same queue with another type.
            task_create_missing_queue_type=settings.queue_type,
        )
        if urlsplit(self.app.conf.broker_url).scheme in ("amqp", "amqps", "pyamqp"):
            # Publisher confirms: a publish returns once RabbitMQ has taken the message, and
            # one it refuses (basic.nack) raises PublishError instead of vanishing.
            self.app.conf.broker_transport_options = {"confirm_publish": True}
        self.signing = settings.signing
        if settings.signing:
            enable_signing(self.app, key=settings.security_key,
                           certificate=settings.security_certificate,
                           cert_store=settings.security_cert_store)
        self._connection: Any = None
        self._producer: Any = None
        self._declared: set[tuple[Any, str]] = set()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.release()
            self._connection = self._producer = None
        self.app.close()

    def _publish(self, task_name: str, args: list[Any], queue: str) -> AsyncResult:
        """What `send_task(name, args, queue=queue)` publishes, without its per-call overhead.

        Celery builds the message (`as_task_v2`, protocol 2, JSON); one connection and
        producer are kept for the publisher's lifetime. Signed messages go through
        Celery's own path, which applies the auth serializer.
        """
        if self.signing:
            return self.app.send_task(task_name, args=args, queue=queue)
        if self._producer is None:
            self._connection = self.app.connection_for_write()
            self._producer = self._connection.Producer(serializer="json")
        task_id = str(uuid.uuid4())
        # The repr shown by monitoring tools, bounded and cheap: Celery's own (saferepr)
        # is slow (docs/performance.md).
        text = repr(args)
        headers, properties, body, _sent = self.app.amqp.as_task_v2(
            task_id, task_name, args=args, kwargs={}, kwargsrepr="{}",
            argsrepr=text if len(text) <= _REPR_MAX else text[:_REPR_MAX - 3] + "...")
        # Declared once per channel (a new one after a reconnection): kombu caches the
        # declaration itself, but binding the queue again is not free (docs/performance.md).
        channel = self._producer.channel
        declare = [self.app.amqp.queues[queue]] if (channel, queue) not in self._declared else []
        self._producer.publish(
            body, exchange="", routing_key=queue, headers=headers, delivery_mode=2,
            declare=declare, retry=True,
            retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
            **properties)
        if declare:
            self._declared.add((self._producer.channel, queue))
        return self.app.AsyncResult(task_id)

    def send(self, task_name: str, payload: dict[str, Any]) -> AsyncResult:
        """Validate `payload` against the task's contract, then publish it."""
        if task_name not in TASKS:
            raise InvalidPayload(f"unknown task {task_name!r}; known: {', '.join(TASKS)}")
        queue, model = TASKS[task_name]
        try:
            model.model_validate(payload)
        except ValidationError as exc:
            raise InvalidPayload(describe_errors(exc)) from None
        try:
            return self._publish(task_name, [payload], queue)
        except Exception as exc:
            raise PublishError(f"could not publish {task_name}: {_why(exc)}") from exc

    def send_bulk(self, events: Iterable[tuple[str, dict[str, Any]]],
                  per_message: int = BULK_MAX_EVENTS) -> list[str]:
        """Publish many events as `loyalty.events.bulk` messages; returns their message ids.

        `events` are `(type, payload)` pairs, a type of BULK_TYPES ("signup", "order.completed",
        "activity", "order.refunded"). Each is
        checked against its own contract first, so nothing is sent if one is invalid.
        """
        if not 1 <= per_message <= BULK_MAX_EVENTS:
            raise InvalidPayload(f"per_message must be between 1 and {BULK_MAX_EVENTS}")
        items = []
        for n, (kind, payload) in enumerate(events):
            if kind not in BULK_TYPES:
                raise InvalidPayload(f"event {n}: unknown type {kind!r}; known: "
                                     f"{', '.join(sorted(BULK_TYPES))}")
            try:
                TASKS[BULK_TYPES[kind]][1].model_validate(payload)
            except ValidationError as exc:
                raise InvalidPayload(f"event {n}: {describe_errors(exc)}") from None
            items.append({"type": kind, "payload": payload})
        ids, bulk = [], TASK_OF[BulkEvents]
        for start in range(0, len(items), per_message):
            body = {"events": items[start:start + per_message]}
            try:
                ids.append(self._publish(bulk, [body], TASKS[bulk][0]).id)
            except Exception as exc:
                raise PublishError(f"could not publish {bulk}: {_why(exc)}") from exc
        return ids

    def signup(self, *, contact_id: str, event_id: str | None = None,
               member_id: str | None = None, email: str | None = None, name: str | None = None,
               occurred_at: str | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {"event_id": event_id or str(uuid7()),
                                   "contact_id": contact_id, "occurred_at": occurred_at or _now()}
        for key, value in (("member_id", member_id), ("email", email), ("name", name)):
            if value is not None:
                payload[key] = value
        return self._sent(TASK_OF[SignupEvent], payload)

    def order_completed(self, *, contact_id: str, order_id: str, total: str | Decimal,
                        currency: str, event_id: str | None = None,
                        occurred_at: str | None = None) -> dict[str, Any]:
        payload = {"event_id": event_id or str(uuid7()), "contact_id": contact_id,
                   "order_id": order_id, "total": str(total), "currency": currency,
                   "occurred_at": occurred_at or _now()}
        return self._sent(TASK_OF[OrderCompletedEvent], payload)

    def activity(self, *, contact_id: str, activity: str, reference_id: str | None = None,
                 event_id: str | None = None, occurred_at: str | None = None) -> dict[str, Any]:
        payload = {"event_id": event_id or str(uuid7()), "contact_id": contact_id,
                   "activity": activity, "occurred_at": occurred_at or _now()}
        if reference_id is not None:
            payload["reference_id"] = reference_id
        return self._sent(TASK_OF[ActivityEvent], payload)

    def order_refunded(self, *, contact_id: str, order_id: str, refund_id: str,
                       amount: str | Decimal, currency: str, event_id: str | None = None,
                       occurred_at: str | None = None) -> dict[str, Any]:
        payload = {"event_id": event_id or str(uuid7()), "contact_id": contact_id,
                   "order_id": order_id, "refund_id": refund_id, "amount": str(amount),
                   "currency": currency, "occurred_at": occurred_at or _now()}
        return self._sent(TASK_OF[OrderRefundedEvent], payload)

    def request(self, task_name: str, **payload: Any) -> AsyncResult:
        """Publish a staff request; the result's `request_id` is its idempotency key.

        The AsyncResult's own `id` is Celery's message id: to read the first result again
        after a timeout, repeat with `request_id=result.request_id`, not with that id.
        Fields given as None are left out.
        """
        payload = {k: v for k, v in payload.items() if v is not None}
        payload.setdefault("request_id", str(uuid.uuid4()))
        result = self.send(task_name, payload)
        result.request_id = payload["request_id"]
        return result

    def adjust_points(self, **payload: Any) -> AsyncResult:
        return self.request(TASK_OF[AdjustPointsRequest], **payload)

    def create_account(self, **payload: Any) -> AsyncResult:
        return self.request(TASK_OF[CreateAccountRequest], **payload)

    def earn_points(self, **payload: Any) -> AsyncResult:
        return self.request(TASK_OF[EarnPointsRequest], **payload)

    def redeem_points(self, **payload: Any) -> AsyncResult:
        return self.request(TASK_OF[RedeemPointsRequest], **payload)

    def refund_transaction(self, **payload: Any) -> AsyncResult:
        return self.request(TASK_OF[RefundTransactionRequest], **payload)

    def _sent(self, task_name: str, payload: dict[str, Any]) -> dict[str, Any]:
        message = self.send(task_name, payload)
        return {"task": task_name, "message_id": message.id, "payload": payload}
