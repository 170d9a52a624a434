"""The outcome policy: what becomes of a message that was not applied.

One table for every way in, decided here and applied by the worker: one message
at a time (`worker.execution`), a batch (`worker.batching`), and messages that
never reached a task (`worker.consumer`, `worker.request`, `worker.raw_letters`).
Nothing is dropped: a message is retried, dead-lettered (kept, then acknowledged)
or requeued (handed back to the broker unacknowledged).

| failure                                      | decision                                  |
|----------------------------------------------|-------------------------------------------|
| invalid payload, conflict, ceiling, no rule  | dead-lettered at once with its reason     |
| account not found (its signup may be late),  | retried (LOYALTY_NOT_FOUND_RETRIES), then |
| order not found (a refund before its order)  | dead-lettered as `account_not_found` or   |
|                                              | `order_not_found`                         |
| transient (database away), soft time limit   | retried (LOYALTY_MAX_RETRIES), then       |
|                                              | dead-lettered as `retries_exhausted`      |
| a bug                                        | dead-lettered as `internal_error`         |
| a whole batch: database away                 | requeued                                  |
| a whole batch: refused                       | its events applied alone, each decided    |
| its worker process crashed                   | requeued until LOYALTY_POISON_DELIVERIES  |
|                                              | crashes, then dead-lettered as `poison`   |
| unreadable, unsigned, unknown task, too big, | dead-lettered unread (`unreadable_reason`)|
| wrong queue, malformed                       |                                           |
| the dead-letter store is away                | retried from a task, requeued elsewhere   |
| a retry cannot be published (broker away)    | requeued                                  |

Pure: no Celery, kombu or SQL, so it is tested as a table (tests/unit/test_policy.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from loyalty.errors import AccountNotFound, LoyaltyError, OrderNotFound, TransientError
from loyalty.retry import backoff_seconds, should_retry
from schemas.events import TASKS


class Action(StrEnum):
    RETRY = "retry"  # publish it again, due after `delay` seconds, with one more retry
    DEAD_LETTER = "dead_letter"  # keep it in the dead-letter table, then acknowledge it
    REQUEUE = "requeue"  # hand it back to the broker unacknowledged
    ALONE = "alone"  # a whole batch refused: apply each of its events on its own


@dataclass(frozen=True)
class Decision:
    action: Action
    #: The dead letter's reason code.
    reason: str | None = None
    #: What the dead letter or the log line says happened.
    detail: str = ""
    delay: float = 0.0


@dataclass(frozen=True)
class Limits:
    """The settings the policy reads (LOYALTY_*; see docs/operations.md)."""

    max_retries: int = 8
    not_found_retries: int = 5
    retry_backoff_max: int = 120
    not_found_backoff: float = 8.0
    poison_deliveries: int = 3

    @classmethod
    def of(cls, settings: Any) -> Limits:
        return cls(max_retries=settings.max_retries,
                   not_found_retries=settings.not_found_retries,
                   retry_backoff_max=settings.retry_backoff_max,
                   not_found_backoff=settings.not_found_backoff,
                   poison_deliveries=settings.poison_deliveries)


def after_failure(exc: BaseException, retries: int, limits: Limits, *, timed_out: bool = False,
                  rand: random.Random | None = None) -> Decision:
    """A message (or one event of a batch) whose work failed, after `retries` retries.

    `timed_out`: the work hit its soft time limit, which is retried like a database away.
    """
    if isinstance(exc, AccountNotFound | OrderNotFound):
        # Often the signup (or the refund's order) is still in flight: wait for it.
        if should_retry(retries, limits.not_found_retries):
            return Decision(Action.RETRY, exc.reason, str(exc), backoff_seconds(
                retries, cap=limits.retry_backoff_max, base=limits.not_found_backoff, rand=rand))
        return Decision(Action.DEAD_LETTER, exc.reason, str(exc))
    if timed_out or isinstance(exc, TransientError):
        if should_retry(retries, limits.max_retries):
            return Decision(Action.RETRY, getattr(exc, "reason", type(exc).__name__), str(exc),
                            backoff_seconds(retries, cap=limits.retry_backoff_max, rand=rand))
        return Decision(Action.DEAD_LETTER, "retries_exhausted", str(exc))
    if isinstance(exc, LoyaltyError):
        return Decision(Action.DEAD_LETTER, exc.reason, str(exc))
    # A bug must not lose the message.
    return Decision(Action.DEAD_LETTER, "internal_error", f"{type(exc).__name__}: {exc}")


def after_batch_failure(exc: BaseException) -> Decision:
    """A batch's whole transaction failed."""
    if isinstance(exc, TransientError):  # the database is away: the messages wait on the broker
        return Decision(Action.REQUEUE, exc.reason, str(exc))
    # The database refused the whole batch: find the culprit alone.
    return Decision(Action.ALONE, getattr(exc, "reason", "internal_error"), str(exc))


def after_crash(crashes: int, limits: Limits, detail: str) -> Decision:
    """A message whose worker process died under it, `crashes` times so far."""
    if crashes < limits.poison_deliveries:
        return Decision(Action.REQUEUE, "poison", detail)
    return Decision(Action.DEAD_LETTER, "poison",
                    f"crashed its worker process {crashes} times; last: {detail}")


def store_unavailable(retries: int, limits: Limits, *, in_task: bool,
                      rand: random.Random | None = None) -> Decision:
    """The dead-letter store is away: the message must stay alive on the broker.

    Inside a task it can only wait by being published again; elsewhere it is
    handed back unacknowledged.
    """
    if in_task:
        return Decision(Action.RETRY, "transient", "",
                        backoff_seconds(retries, cap=limits.retry_backoff_max, rand=rand))
    return Decision(Action.REQUEUE, "transient")


def retry_unpublished() -> Decision:
    """A retry could not be published (the broker is away): keep the original message."""
    return Decision(Action.REQUEUE, "transient")


def unreadable_reason(exc: BaseException) -> str:
    """Why a message the worker could not read is kept (it is never replayed)."""
    name = type(exc).__name__
    chain = {type(e).__name__ for e in (exc, exc.__cause__, exc.__context__) if e is not None}
    if "SecurityError" in chain or "SecurityError" in str(exc):
        return "signature_invalid"
    if name == "ContentDisallowed":
        return "content_disallowed"
    if name == "DecodeError":
        return "undecodable_body"
    return "malformed_message"


# -- the dead letter ---------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    """What the dead-letter table keeps of one message: `Ledger.add_dead_letter(**fields())`."""

    task_name: str | None
    message_id: str | None
    payload: str
    headers: dict[str, Any]
    reason: str
    error_detail: str

    def fields(self) -> dict[str, Any]:
        return {"task_name": self.task_name, "message_id": self.message_id,
                "payload": self.payload, "headers": self.headers, "reason": self.reason,
                "error_detail": self.error_detail}


def task_letter(task_name: str, message_id: str | None, args: Any, kwargs: Any, reason: str,
                detail: str, *, retries: int, delivery_info: dict[str, Any],
                origin: Any = None, with_origin: bool = False) -> DeadLetter:
    """The letter of a task message that was read: Celery's own body shape, so a replay
    reads every letter the same way."""
    headers: dict[str, Any] = {"content_type": "application/json", "retries": retries,
                               "delivery_info": delivery_info}
    if with_origin:
        headers["origin"] = origin
    body = json.dumps([list(args), kwargs, {}], default=repr)
    return DeadLetter(task_name, message_id, body, headers, reason, detail)


#: What is kept of a body too large to read.
KEPT_OF_LARGE_BODY = 64 * 1024


def raw_letter(message: Any, reason: str, detail: str, task_name: str | None = None,
               truncate: bool = False) -> DeadLetter:
    """The letter of a message kept unread, from the broker's bytes and headers.

    The body is never deserialized: one that is not UTF-8 text is kept as base64,
    so no pickle loader ever sees it. With `truncate`, only its first 64 KiB are
    kept, with its size and SHA-256.
    """
    headers = getattr(message, "headers", None)
    headers = headers if isinstance(headers, dict) else {"unparsed": repr(headers)}
    body = getattr(message, "body", None)
    whole: dict[str, Any] = {}
    if truncate and isinstance(body, bytes | bytearray | memoryview | str):
        data = body.encode() if isinstance(body, str) else bytes(body)
        whole = {"body_bytes": len(data), "body_sha256": hashlib.sha256(data).hexdigest(),
                 "body_kept_bytes": min(len(data), KEPT_OF_LARGE_BODY)}
        body = data[:KEPT_OF_LARGE_BODY]
    payload, encoding = raw_body(body)
    envelope = {
        "content_type": getattr(message, "content_type", None),
        "content_encoding": getattr(message, "content_encoding", None),
        "headers": _json_safe(headers),
        "properties": _json_safe(getattr(message, "properties", {}) or {}),
        "delivery_info": _json_safe(getattr(message, "delivery_info", {}) or {}),
    }
    if encoding:
        envelope["body_encoding"] = encoding
    envelope.update(whole)
    name = task_name if task_name is not None else headers.get("task")
    message_id = headers.get("id") or (envelope["properties"].get("correlation_id"))
    task = str(name) if name is not None else None
    if detail == reason == "malformed_message":
        # Celery found no task name in it: say so rather than repeat the reason code.
        detail = "not a Celery task message: its headers name no task"
    if reason == "unknown_task":
        # Celery reports it as `KeyError: 'name'`; say it in the product's words.
        detail = f"no task named {task!r}; the worker runs {', '.join(sorted(TASKS))}"
    return DeadLetter(task, str(message_id) if message_id is not None else None, payload,
                      envelope, reason, detail)


def raw_body(body: Any) -> tuple[str, str | None]:
    """The body as text, and how it was encoded ("base64") when it is not UTF-8 text."""
    if body is None:
        return "", None
    if isinstance(body, str):
        return body, None
    if isinstance(body, bytes | bytearray | memoryview):
        data = bytes(body)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(data).decode("ascii"), "base64"
        if "\x00" in text:
            return base64.b64encode(data).decode("ascii"), "base64"
        return text, None
    return repr(body), "repr"


def _json_safe(value: Any) -> Any:
    """Headers made JSON-safe without trusting their types."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes):
        return raw_body(value)[0]
    return repr(value)


def about(payload: Any) -> dict[str, Any]:
    """Which event or request and whose, for a log line, from a payload that may be invalid."""
    if not isinstance(payload, dict):
        return {}
    return {k: payload[k] for k in ("event_id", "request_id", "contact_id", "order_id")
            if isinstance(payload.get(k), str)}
