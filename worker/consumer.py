"""A Celery consumer that keeps unreadable messages instead of deleting them.

Stock Celery acknowledges (deletes) a message it cannot read (a disallowed
content type such as pickle or yaml, a body that is not valid JSON, an unknown
task name, malformed headers) and only logs a line. Here each one is written
to the dead-letter table with its raw body and headers first, then acknowledged.
"""

from __future__ import annotations

import logging
import time
from fnmatch import fnmatchcase
from typing import Any

from celery.worker.consumer import Consumer
from kombu.exceptions import ContentDisallowed

from loyalty import policy
from loyalty.errors import TransientError
from schemas.events import EVENTS_QUEUE
from tasks.table import routes
from worker import raw_letters
from worker.config import ARRIVED_ON

log = logging.getLogger("loyalty.consumer")


def queue_for(task: str, routes: Any) -> str | None:
    """The one queue a task may run from, by the app's routes (`worker.config`)."""
    for pattern, route in (routes or {}).items():
        if fnmatchcase(task, pattern):
            return str(route["queue"])
    return None


def _body_size(message: Any) -> int:
    body = getattr(message, "body", None)
    if isinstance(body, str):
        return len(body.encode())
    return len(body) if isinstance(body, bytes | bytearray | memoryview) else 0


def _keep(message: Any, reason: str, exc: BaseException | None, task_name: str | None = None,
          detail: str | None = None, truncate: bool = False) -> None:
    detail = detail or (f"{type(exc).__name__}: {exc}" if exc is not None else reason)
    try:
        raw_letters.store(message, reason, detail, task_name, truncate=truncate)
    except TransientError as err:
        # The store is down: put the message back rather than lose it, and slow the loop
        # (loyalty.policy.store_unavailable).
        log.error("cannot dead-letter yet, requeueing", extra={"reason": reason, "error": str(err)})
        time.sleep(1)
        message.reject_log_error(log, (Exception,), requeue=True)
        return
    message.ack_log_error(log, (Exception,))


#: Content type of Celery's `auth` serializer (a signed message).
SIGNED = "application/data"


def _unsigned_beyond_events(message: Any) -> bool:
    """With LOYALTY_REQUIRE_SIGNED_ADMIN: an unsigned message that is not a shop event.

    Plain JSON passes only if it was taken from `loyalty.events` (the queue the worker
    took it from, not what its headers claim) and names an event task; anything else
    unsigned (an admin task on either queue, any task on `loyalty.admin`, a message
    without a task header) is refused before it is decoded. A signed one goes on to
    kombu's auth serializer, which checks the signature.
    """
    from worker.app import settings

    if not settings().require_signed_admin or message.content_type == SIGNED:
        return False
    info = message.delivery_info if isinstance(message.delivery_info, dict) else {}
    headers = message.headers if isinstance(message.headers, dict) else {}
    task = headers.get("task")
    return not (info.get(ARRIVED_ON) == EVENTS_QUEUE and isinstance(task, str)
                and queue_for(task, routes()) == EVENTS_QUEUE)


class DeadLetteringConsumer(Consumer):
    def on_decode_error(self, message: Any, exc: BaseException) -> None:
        _keep(message, policy.unreadable_reason(exc), exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        _keep(message, "malformed_message", None)

    def on_unknown_task(self, body: Any, message: Any, exc: BaseException) -> None:
        name = message.headers.get("task") if isinstance(message.headers, dict) else None
        _keep(message, "unknown_task", exc, task_name=str(name) if name is not None else None)

    def on_invalid_task(self, body: Any, message: Any, exc: BaseException) -> None:
        _keep(message, policy.unreadable_reason(exc), exc)

    def on_connection_error_after_connected(self, exc: BaseException) -> None:
        # Celery collects the broken connection (which detaches its transport) and then
        # closes it; kombu's Redis channel then tries to restore its unacknowledged
        # messages through the detached transport and raises AttributeError, which
        # Celery does not ignore: the worker would exit. Those messages stay in Redis's
        # unacked set and come back after the visibility timeout, so carry on.
        connection = self.connection
        if connection is not None:
            close = connection.close

            def tolerant_close() -> Any:
                try:
                    return close()
                except AttributeError as err:
                    log.warning("could not close the lost broker connection cleanly; its "
                                "unacknowledged messages come back after the visibility timeout",
                                extra={"error": str(err)})
                    return None

            connection.close = tolerant_close
        super().on_connection_error_after_connected(exc)

    @staticmethod
    def _arrived_on(message: Any) -> str | None:
        """The queue a message was delivered from, as the broker (not the message) says:
        `worker.config.ConsumedQueue` records it for each delivery."""
        info = message.delivery_info if isinstance(message.delivery_info, dict) else {}
        arrived = info.get(ARRIVED_ON)
        return str(arrived) if arrived is not None else None

    def _wrong_queue(self, message: Any) -> str | None:
        """Why a message must not run from where it arrived, or None if it may.

        Admin tasks run only from `loyalty.admin` and events only from `loyalty.events`,
        whatever the message says of itself: anyone who may publish shop events must not
        be able to adjust points. A message whose task is unknown is left to Celery's
        unknown-task handling.
        """
        headers = message.headers if isinstance(message.headers, dict) else {}
        task = headers.get("task")
        if not isinstance(task, str):
            return None
        expected = queue_for(task, self.app.conf.task_routes)
        if expected is None:
            return None
        arrived = self._arrived_on(message)
        if arrived != expected:
            return (f"task {task} runs only from queue {expected}; it arrived on "
                    f"{arrived or 'a queue the broker did not name'}")
        info = message.delivery_info if isinstance(message.delivery_info, dict) else {}
        claimed = info.get("routing_key")
        if self.connection is not None and self.connection.transport.driver_type == "redis" \
                and claimed not in (None, arrived):
            # On Redis, a restore after a restart re-queues a message by the routing key
            # it claims: one claiming another queue could move itself there.
            return (f"message on queue {arrived} claims routing key {claimed!r}; "
                    "it would be restored to another queue")
        return None

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Any:
        handler = super().create_task_handler(*args, **kwargs)

        limit = self.app.conf.loyalty_settings.max_message_bytes

        def on_task_received(message: Any) -> Any:
            size = _body_size(message)
            if size > limit:
                return _keep(message, "message_too_large", None, truncate=True,
                             detail=f"the body is {size} bytes; at most {limit} are read "
                                    "(LOYALTY_MAX_MESSAGE_BYTES)")
            if _unsigned_beyond_events(message):
                return _keep(message, "content_disallowed", ContentDisallowed(
                    "unsigned, and not an event task taken from loyalty.events "
                    "(LOYALTY_REQUIRE_SIGNED_ADMIN)"))
            wrong = self._wrong_queue(message)
            if wrong is not None:
                return _keep(message, "wrong_queue", None, detail=wrong)
            # Headers that Celery trips over (a missing id, a bad eta) raise out of
            # its strategy and would kill the consumer; keep the message instead.
            try:
                result = handler(message)
            except Exception as exc:
                if getattr(message, "acknowledged", False):
                    raise
                return _keep(message, policy.unreadable_reason(exc), exc)
            # A message left open here (a stock-path task, a retry waiting for its ETA)
            # must not be covered by a batch's grouped ack.
            batcher = getattr(self, "_loyalty_batcher", None)
            if batcher is not None and not message.acknowledged:
                batcher.track(message)
            return result

        return on_task_received
