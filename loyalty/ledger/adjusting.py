"""Staff adjustments: one ADJUST entry per request, decided by `loyalty.adjustments`.

A repeated request_id returns its first result; the same id with other content
is an `IdempotencyConflict` (`staff_requests`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Engine, func, update

from loyalty import views
from loyalty.adjustments import decide_adjustment
from loyalty.ledger.accounts import lock_account
from loyalty.ledger.boundary import run
from loyalty.ledger.staff_requests import first_result, remember
from loyalty.tables import accounts, ledger_entries
from schemas.events import TASK_OF, AdjustPointsRequest

TASK = TASK_OF[AdjustPointsRequest]


def adjust_points(engine: Engine, request: AdjustPointsRequest) -> dict[str, Any]:
    """Apply or reject one staff adjustment; a repeated request_id returns its first result."""
    return run(engine, adjust_work(request))


def adjust_work(request: AdjustPointsRequest) -> Callable[[Connection], dict[str, Any]]:
    fingerprint = request.fingerprint()

    def work(conn: Connection) -> dict[str, Any]:
        # Looked up once, after the account lock that serialises repeats of this request.
        account = lock_account(
            conn,
            account_id=UUID(request.account_id) if request.account_id else None,
            contact_id=request.contact_id,
        )
        first = first_result(conn, TASK, request.request_id, fingerprint)
        if first is not None:
            return first
        entry_id: UUID | None = None
        if account is None:
            result: dict[str, Any] = {"status": "rejected", "reason": "account_not_found",
                                      "account": None}
        else:
            decision = decide_adjustment(
                balance=account["balance"],
                revision=account["revision"],
                amount=request.amount,
                new_balance=request.balance,
                expected_revision=request.revision,
            )
            if decision.applied:
                entry_id, account = _write_adjustment(conn, account, decision.delta,
                                                      decision.balance_after, request)
                result = {"status": "applied", "transaction_id": str(entry_id),
                          "account": views.account_json(account)}
            else:
                result = {"status": "rejected", "reason": decision.reason,
                          "account": views.account_json(account)}
        return remember(conn, TASK, request.request_id, fingerprint, result, entry_id)

    return work


def _write_adjustment(conn: Connection, account: Mapping[Any, Any], delta: int,
                      balance_after: int, request: AdjustPointsRequest
                      ) -> tuple[UUID, dict[str, Any]]:
    """Write the ADJUST entry; returns its id and the account as it now stands."""
    # The account first: the ledger's statement trigger checks it against the entry.
    updated = conn.execute(
        update(accounts)
        .where(accounts.c.id == account["id"])
        .values(
            balance=balance_after,
            adjusted=accounts.c.adjusted + delta,
            revision=accounts.c.revision + 1,
            updated_at=func.now(),
            last_activity_at=func.now(),
        )
        .returning(accounts)
    ).mappings().one()
    entry_id: UUID = conn.execute(
        ledger_entries.insert()
        .values(
            account_id=account["id"],
            type="ADJUST",
            amount=delta,
            balance_after=balance_after,
            balance_before=account["balance"],
            account_revision=account["revision"] + 1,
            description=request.description,
            idempotency_key=f"adjust:{request.request_id}",
            actor=request.actor,
        )
        .returning(ledger_entries.c.id)
    ).scalar_one()
    return entry_id, {**updated, "member_id": account["member_id"]}
