"""Dead-lettering a message that never reached a task, straight from the broker's bytes.

`loyalty.policy.raw_letter` builds the letter without deserializing the body;
this module stores it, and keeps the body even when the headers will not store.
"""

from __future__ import annotations

import logging
from typing import Any

from loyalty.errors import TransientError
from loyalty.policy import raw_letter
from worker.app import ledger

log = logging.getLogger("loyalty.deadletters")


def store(message: Any, reason: str, detail: str, task_name: str | None = None,
          truncate: bool = False) -> int:
    """Write one raw message to the dead-letter table; raises TransientError if it cannot.

    With `truncate`, only the body's first 64 KiB are kept, with its size and SHA-256.
    """
    letter = raw_letter(message, reason, detail, task_name, truncate)
    try:
        letter_id = ledger().add_dead_letter(**letter.fields())
    except TransientError:
        raise
    except Exception as exc:  # headers the database will not take: keep the body at least
        log.exception("storing the headers failed; keeping the message without them")
        letter_id = ledger().add_dead_letter(**{
            **letter.fields(), "headers": {"unstorable": True},
            "error_detail": f"{letter.error_detail} (headers not stored: {type(exc).__name__})"})
    log.warning("dead-lettered", extra={"task": letter.task_name, "task_id": letter.message_id,
                                         "reason": reason, "detail": letter.error_detail,
                                         "dead_letter_id": letter_id})
    return letter_id
