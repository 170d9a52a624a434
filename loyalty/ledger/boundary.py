"""The transaction boundary: every unit of work runs here, and driver errors leave as ours.

A unit of work is a function of one connection; `run` gives it one PostgreSQL
transaction and commits it. `transactions` is the same loop written out, for callers
that keep the work in their own body. Driver errors are translated once, by `translate`:
callers never import psycopg or SQLAlchemy to decide what to do, and a refused
constraint travels by name, as data (`LedgerIntegrityError.constraint`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InterfaceError, OperationalError

from loyalty.errors import ContactConflict, InvalidPayload, LoyaltyError, TransientError

T = TypeVar("T")

#: Unique keys that two deliveries of one message can race for. Losing such a
#: race is not an error: the unit of work runs again and finds the winner's row.
RACE_CONSTRAINTS = frozenset(
    {
        "pk_processed_events",
        "pk_staff_requests",
        # Two deliveries of one redemption or refund (both also serialise on the account).
        "uq_redemptions_request_id",
        "uq_ledger_entries_refunds_entry_id",
        # A redemption code drawn twice (2^-78): the unit of work runs again with a new one.
        "uq_redemptions_code",
        "pk_contacts",
        "uq_accounts_contact_id",
        "uq_ledger_entries_event_id",
        "uq_ledger_entries_idempotency_key",
        "uq_ledger_entries_one_order",
        "uq_ledger_entries_one_signup",
        "uq_dead_letters_message_id",
    }
)

#: deadlock_detected, serialization_failure
RETRY_STATES = frozenset({"40P01", "40001"})

#: Attempts at one unit of work, the first included.
ATTEMPTS = 3


class LedgerIntegrityError(LoyaltyError):
    """The database refused a write that the code believed valid: a bug, never retried.

    `constraint` names what refused it, for callers that expect one constraint
    (a second ACTIVE rule, say) and say so in their own words.
    """

    reason = "integrity_violation"

    def __init__(self, message: str, constraint: str | None = None) -> None:
        super().__init__(message)
        self.constraint = constraint


def constraint_of(exc: DBAPIError) -> str | None:
    diag = getattr(exc.orig, "diag", None)
    return getattr(diag, "constraint_name", None)


def _said(exc: DBAPIError) -> str:
    return str(exc.orig).strip()


def member_conflict(exc: DBAPIError) -> ContactConflict:
    """Which member_id: PostgreSQL's detail reads `Key (member_id)=(m-1) already exists.`"""
    detail = getattr(getattr(exc.orig, "diag", None), "message_detail", None) or ""
    found = re.search(r"=\((.*)\) already exists", detail, re.S)
    which = f"member_id {found.group(1)!r}" if found else "member_id"
    return ContactConflict(f"{which} is already linked to another contact")


def translate(exc: DBAPIError) -> tuple[BaseException, bool]:
    """Our exception for a driver error, and whether running the work again may succeed.

    An error that is none of ours (a programming error in SQL) comes back unchanged.
    """
    if isinstance(exc, IntegrityError):
        name = constraint_of(exc)
        if name == "uq_contacts_member_id":
            return member_conflict(exc), False
        return (LedgerIntegrityError(f"{name or 'constraint'}: {exc.orig}", constraint=name),
                name in RACE_CONSTRAINTS)
    if isinstance(exc, OperationalError | InterfaceError):
        # Two batches that touch the same accounts in different phases can deadlock;
        # PostgreSQL aborts one, and it simply runs again.
        return (TransientError(f"database unavailable: {_said(exc)}"),
                getattr(exc.orig, "sqlstate", None) in RETRY_STATES)
    if isinstance(exc, DataError):
        # Values PostgreSQL cannot hold (a NUL character, an out-of-range number).
        return InvalidPayload(f"the database refused a value: {_said(exc)}"), False
    if exc.connection_invalidated:
        return TransientError(f"connection lost: {_said(exc)}"), False
    return exc, False


def transactions(engine: Engine) -> Iterator[AbstractContextManager[Connection]]:
    """Attempts at one transaction, again while it lost a race or a deadlock::

        for transaction in transactions(engine):
            with transaction as conn:
                result = work(conn)
        return result

    Each attempt commits when its block ends. A lost race or deadlock (also at COMMIT)
    is swallowed and the loop goes again, up to ATTEMPTS; any other driver error leaves
    translated. Assign in the block and return after the loop: a `return` inside the
    block would not see a commit that has to be tried again.
    """
    committed: list[bool] = []
    for attempt in range(ATTEMPTS):
        yield _attempt(engine, attempt == ATTEMPTS - 1, committed)
        if committed:
            return


@contextmanager
def _attempt(engine: Engine, last: bool, committed: list[bool]) -> Iterator[Connection]:
    try:
        with engine.begin() as conn:
            yield conn
    except DBAPIError as exc:
        error, again = translate(exc)
        if again and not last:
            return
        if error is exc:
            raise
        raise error from exc
    committed.append(True)


def run(engine: Engine, work: Callable[[Connection], T]) -> T:
    """Run one unit of work in one transaction, again if it lost a race or a deadlock."""
    for transaction in transactions(engine):
        with transaction as conn:
            result = work(conn)
    return result


def read(engine: Engine, work: Callable[[Connection], T]) -> T:
    """Run a read outside any write transaction; only an unreachable database is ours."""
    try:
        with engine.connect() as conn:
            return work(conn)
    except (OperationalError, InterfaceError) as exc:
        raise translate(exc)[0] from exc


def guarded(conn: Connection, work: Callable[[Connection], T]) -> T | LoyaltyError:
    """Run one item's work in a savepoint, so that its failure undoes only itself.

    Returns the item's error instead of raising it; what concerns the whole
    transaction (a lost connection, a bug) still raises.
    """
    try:
        with conn.begin_nested():
            return work(conn)
    except LoyaltyError as exc:
        return exc
    except (IntegrityError, DataError) as exc:
        error, _ = translate(exc)
        if isinstance(error, ContactConflict | InvalidPayload):
            return error
        raise
