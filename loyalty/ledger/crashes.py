"""Crash counting: how often a message took its worker process down.

The count lives in PostgreSQL because the process that crashed cannot keep it;
the outcome policy turns a message that crashed too often into `poison`.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Engine, func
from sqlalchemy.dialects.postgresql import insert as pg_insert

from loyalty.ledger.boundary import run
from loyalty.tables import message_crashes


def record_crash(engine: Engine, message_id: str, task_name: str | None, error: str) -> int:
    """Count one more time this message took its worker process down; returns the count."""
    return record_crashes(engine, {message_id: task_name}, error)[message_id]


def record_crashes(engine: Engine, messages: Mapping[str, str | None],
                   error: str) -> dict[str, int]:
    """`record_crash` for every message of a batch that took its worker process down."""
    if not messages:
        return {}
    ins = pg_insert(message_crashes).values([
        {"message_id": m, "task_name": t, "crashes": 1, "last_error": error[:2000]}
        for m, t in sorted(messages.items())])
    statement = ins.on_conflict_do_update(
        index_elements=[message_crashes.c.message_id],
        set_={"crashes": message_crashes.c.crashes + 1, "last_error": ins.excluded.last_error,
              "last_crashed_at": func.now()},
    ).returning(message_crashes.c.message_id, message_crashes.c.crashes)
    rows = run(engine, lambda conn: conn.execute(statement).all())
    return {message_id: count for message_id, count in rows}
