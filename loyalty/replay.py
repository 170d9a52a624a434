"""Turning a stored dead letter back into a message: pure, and never unpickling anything.

A letter keeps the body exactly as it arrived. Only letters for a known task whose
body is JSON (Celery's `[args, kwargs, embed]`) can be replayed; the rest (pickle,
yaml, garbage, unknown tasks) stay for an operator to read and discard.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from loyalty.errors import (
    DeadLetterNotFound,
    InvalidPayload,
    LoyaltyError,
    NotReplayable,
    TransientError,
)
from schemas.events import TASKS, Contract, PayloadError, parse_task_args

# The task table says which tasks can be replayed; its replay handler uses this module.
from tasks.table import REPLAYABLE

JSON_TYPES = ("application/json", None, "")
#: Letters kept without being read, because the message was unreadable, unsigned or
#: forged, malformed, of an unknown task, from the wrong queue or too large. Replaying
#: one would run what the worker refused to run: they can only be discarded.
KEPT_UNREAD = frozenset({"content_disallowed", "undecodable_body", "signature_invalid",
                         "malformed_message", "unknown_task", "wrong_queue",
                         "message_too_large"})


def decode_letter(letter: Mapping[str, Any]) -> Contract:
    if letter.get("reason") in KEPT_UNREAD:
        raise NotReplayable(f"letters kept as {letter['reason']} are never replayed; "
                            "discard them")
    task_name = letter["task_name"]
    if task_name not in REPLAYABLE:
        raise NotReplayable(f"no task named {task_name!r} can take this letter")
    headers = letter["headers"] or {}
    if headers.get("content_type") not in JSON_TYPES or headers.get("body_encoding"):
        raise NotReplayable(
            f"the body is {headers.get('content_type')!r}; only JSON bodies are replayed"
        )
    try:
        body = json.loads(letter["payload"])
    except ValueError:
        raise NotReplayable("the stored body is not valid JSON") from None
    if not isinstance(body, list) or len(body) not in (2, 3) or not isinstance(body[0], list) \
            or not isinstance(body[1], dict):
        raise NotReplayable("the stored body is not a Celery [args, kwargs] message")
    _queue, model = TASKS[task_name]
    try:
        return parse_task_args(model, body[0], body[1])
    except PayloadError as exc:
        raise InvalidPayload(str(exc)) from None


#: Letters per replay transaction.
CHUNK = 500


def replay(ledger: Any, letter_ids: list[int], *, dry_run: bool = False,
           actor: str | None = None, progress: Any = None) -> dict[str, Any]:
    """Replay letters in chunks (one transaction each) and summarise what happened.

    A chunk the database refuses as a whole is replayed again one letter at a time,
    so that one bad letter cannot hold back the others.
    """
    items = []
    for start in range(0, len(letter_ids), CHUNK):
        chunk = letter_ids[start:start + CHUNK]
        try:
            items += ledger.replay_dead_letters(chunk, decode_letter, dry_run=dry_run,
                                                actor=actor)
        except (DeadLetterNotFound, TransientError):
            raise
        except LoyaltyError:
            items += [ledger.replay_dead_letter(letter_id, decode_letter, dry_run=dry_run,
                                                actor=actor) for letter_id in chunk]
        if progress is not None:
            progress(len(chunk))
    summary: dict[str, int] = {}
    for item in items:
        summary[item["result"]] = summary.get(item["result"], 0) + 1
    return {"dry_run": dry_run, "summary": summary, "items": items}
