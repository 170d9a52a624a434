"""Staff earns (Wix earnPoints): one EARN entry for an activity, with no event and no rule.

It keeps the ceilings of every earn (9,999,999 points at once, a balance of at most
999,999,999); a refusal is the request's answer (`balance_above_maximum`), not an error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Engine

from loyalty import views
from loyalty.ledger.accounts import lock_account
from loyalty.ledger.boundary import run
from loyalty.ledger.entries import above_ceiling
from loyalty.ledger.staff_entries import write_entry
from loyalty.ledger.staff_requests import first_result, remember
from schemas.events import TASK_OF, EarnPointsRequest

TASK = TASK_OF[EarnPointsRequest]


def earn_points(engine: Engine, request: EarnPointsRequest) -> dict[str, Any]:
    """`{status: applied | rejected, reason?, transaction_id?, account}`."""
    return run(engine, earn_work(request))


def earn_work(request: EarnPointsRequest) -> Callable[[Connection], dict[str, Any]]:
    fingerprint = request.fingerprint()

    def work(conn: Connection) -> dict[str, Any]:
        account = lock_account(conn, account_id=UUID(request.account_id)
                               if request.account_id else None, contact_id=request.contact_id)
        first = first_result(conn, TASK, request.request_id, fingerprint)
        if first is not None:
            return first
        if account is None:
            return remember(conn, TASK, request.request_id, fingerprint,
                            {"status": "rejected", "reason": "account_not_found",
                             "account": None})
        refused = above_ceiling(request.amount, account["balance"])
        if refused is not None:
            return remember(conn, TASK, request.request_id, fingerprint,
                            {"status": "rejected", "reason": refused.reason,
                             "account": views.account_json(account)})
        entry, account = write_entry(
            conn, account, amount=request.amount, total="earned", total_delta=request.amount,
            type="EARN", description=request.description or request.activity,
            idempotency_key=f"earn:{request.request_id}", activity=request.activity,
            actor=request.actor)
        return remember(conn, TASK, request.request_id, fingerprint,
                        {"status": "applied", "transaction_id": str(entry),
                         "account": views.account_json(account)}, entry)

    return work
