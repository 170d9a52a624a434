"""The program record in the database: read by every room that needs a setting, changed
by `loyalty program set` under its revision (as rules and rewards are)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, func, select, update

from loyalty.errors import ProgramError
from loyalty.ledger.boundary import LedgerIntegrityError, read, run
from loyalty.program import ProgramSettings
from loyalty.tables import program

_FIELDS = ("pending_days", "expiration_mode", "expiration_months", "expiration_percentage",
           "tiers_status", "rolling_window_months", "revision")


def settings(conn: Connection, *, lock: bool = False) -> ProgramSettings:
    """The program's settings as of this transaction (`lock`: and none may change them)."""
    query = select(program).where(program.c.id == 1)
    row = conn.execute(query.with_for_update() if lock else query).mappings().one()
    return ProgramSettings(**{f: row[f] for f in _FIELDS})


def show_program(engine: Engine) -> dict[str, Any]:
    return read(engine, settings).as_json()


def set_program(engine: Engine, *, expected_revision: int | None = None,
                **given: Any) -> dict[str, Any]:
    """Change the settings given (not None); the revision goes up by one if anything changed."""
    def work(conn: Connection) -> ProgramSettings:
        current = settings(conn, lock=True)
        if expected_revision is not None and expected_revision != current.revision:
            raise ProgramError(f"the program is at revision {current.revision},"
                               f" not {expected_revision}")
        wanted = current.changed(**given)
        if wanted == current:
            return current  # nothing changes, so the revision does not move either
        conn.execute(update(program).where(program.c.id == 1).values(
            **wanted.columns(), revision=program.c.revision + 1, updated_at=func.now()))
        return settings(conn)

    try:
        return run(engine, work).as_json()
    except LedgerIntegrityError as exc:
        raise ProgramError(str(exc)) from None
