"""Dead-lettering a message that never reached a task, straight from the broker's bytes.

The body is stored as it arrived and is never deserialized here: a pickle body is
kept as base64 text, so no pickle loader ever sees it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from typing import Any

from loyalty.errors import TransientError
from schemas.events import TASKS
from worker.app import ledger

log = logging.getLogger("loyalty.deadletters")


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


def _plain(value: Any) -> Any:
    """Headers made JSON-safe without trusting their types."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes):
        return raw_body(value)[0]
    return repr(value)


#: What is kept of a body too large to read.
KEPT_OF_LARGE_BODY = 64 * 1024


def store(message: Any, reason: str, detail: str, task_name: str | None = None,
          truncate: bool = False) -> int:
    """Write one raw message to the dead-letter table; raises TransientError if it cannot.

    With `truncate`, only the body's first 64 KiB are kept, with its size and SHA-256.
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
        "headers": _plain(headers),
        "properties": _plain(getattr(message, "properties", {}) or {}),
        "delivery_info": _plain(getattr(message, "delivery_info", {}) or {}),
    }
    if encoding:
        envelope["body_encoding"] = encoding
    envelope.update(whole)
    name = task_name if task_name is not None else headers.get("task")
    message_id = headers.get("id") or (envelope["properties"].get("correlation_id"))
    task = str(name) if name is not None else None
    message = str(message_id) if message_id is not None else None
    if detail == reason == "malformed_message":
        # Celery found no task name in it: say so rather than repeat the reason code.
        detail = "not a Celery task message: its headers name no task"
    if reason == "unknown_task":
        # Celery reports it as `KeyError: 'name'`; say it in the product's words.
        detail = (f"no task named {task!r}; the worker runs "
                  f"{', '.join(sorted(TASKS))}")
    try:
        letter_id = ledger().add_dead_letter(task_name=task, message_id=message, payload=payload,
                                             headers=envelope, reason=reason, error_detail=detail)
    except TransientError:
        raise
    except Exception as exc:  # headers the database will not take: keep the body at least
        log.exception("storing the headers failed; keeping the message without them")
        letter_id = ledger().add_dead_letter(
            task_name=task, message_id=message, payload=payload, headers={"unstorable": True},
            reason=reason, error_detail=f"{detail} (headers not stored: {type(exc).__name__})")
    log.warning("dead-lettered", extra={"task": name, "task_id": message_id, "reason": reason,
                                         "detail": detail, "dead_letter_id": letter_id})
    return letter_id

