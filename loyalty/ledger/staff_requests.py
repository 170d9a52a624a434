"""Staff requests answer once: the first result of a request_id, kept and returned again.

Every staff task (adjust, create, earn, redeem, refund) runs its unit of work between
`first_result` and `remember`, in one transaction: a repeat returns the stored result
and changes nothing; the same request_id with other content, or for another task, is
an `IdempotencyConflict`. Callers look the request up after the lock that serialises
its repeats (the account's); two first deliveries that still race are told apart by
the primary key (`pk_staff_requests`), and the loser runs again and finds the winner.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import Connection, select

from loyalty.errors import IdempotencyConflict
from loyalty.tables import staff_requests


def first_result(conn: Connection, task: str, request_id: str,
                 fingerprint: str) -> dict[str, Any] | None:
    """The stored result of this request, None if it is new; a conflict if it differs."""
    row = conn.execute(
        select(staff_requests.c.task, staff_requests.c.fingerprint, staff_requests.c.result)
        .where(staff_requests.c.request_id == request_id)
    ).first()
    if row is None:
        return None
    if row.task != task:
        raise IdempotencyConflict(f"request_id {request_id!r} was already used for {row.task}")
    if row.fingerprint != fingerprint:
        raise IdempotencyConflict(
            f"request_id {request_id!r} was already used with a different payload")
    return dict(row.result)


def remember(conn: Connection, task: str, request_id: str, fingerprint: str,
             result: dict[str, Any], entry_id: UUID | None = None) -> dict[str, Any]:
    """Keep the request's result (the one every repeat returns) and return it."""
    conn.execute(staff_requests.insert().values(
        request_id=request_id, task=task, fingerprint=fingerprint, status=result["status"],
        reason=result.get("reason"), ledger_entry_id=entry_id, result=result))
    return result
