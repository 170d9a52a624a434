"""Redeeming points (REDEEM entries and their redemptions) and refunding them (REFUND).

Decisions are pure (`loyalty.redemptions`); this room reads and writes. A redemption
locks its account before it reads the balance, so concurrent redemptions of one
account apply one after another: the balance never goes below zero, and exactly the
affordable ones apply. A refund locks the account of the REDEEM it gives back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Engine, func, select, text, update

from loyalty import views
from loyalty.errors import InvalidPayload, RedemptionNotFound
from loyalty.ledger.accounts import lock_account
from loyalty.ledger.boundary import read, run
from loyalty.ledger.rewards import reward_for_redemption
from loyalty.ledger.staff_entries import write_entry
from loyalty.ledger.staff_requests import first_result, remember
from loyalty.redemptions import (
    decide_redemption,
    new_code,
    normalise_code,
    refund_refused,
)
from loyalty.tables import ledger_entries, redemptions
from schemas.events import TASK_OF, RedeemPointsRequest, RefundTransactionRequest

REDEEM_TASK = TASK_OF[RedeemPointsRequest]
REFUND_TASK = TASK_OF[RefundTransactionRequest]


def redeem_points(engine: Engine, request: RedeemPointsRequest) -> dict[str, Any]:
    """Apply or reject one redemption; a repeated request_id returns its first result."""
    return run(engine, redeem_work(request))


def redeem_work(request: RedeemPointsRequest) -> Callable[[Connection], dict[str, Any]]:
    fingerprint = request.fingerprint()

    def work(conn: Connection) -> dict[str, Any]:
        account = lock_account(conn, account_id=UUID(request.account_id)
                               if request.account_id else None, contact_id=request.contact_id)
        first = first_result(conn, REDEEM_TASK, request.request_id, fingerprint)
        if first is not None:
            return first
        if account is None:
            return remember(conn, REDEEM_TASK, request.request_id, fingerprint,
                            {"status": "rejected", "reason": "account_not_found",
                             "account": None})
        reward = (reward_for_redemption(conn, request.reward_id)
                  if request.reward_id is not None else None)
        count = request.count or 1
        tier_id = _tier_of(conn, account["id"]) if reward is not None and reward.tier_costs \
            else None
        decision = decide_redemption(
            balance=account["balance"], revision=account["revision"],
            expected_revision=request.revision, reward_asked=request.reward_id is not None,
            reward=reward, count=count, amount=request.amount, tier_id=tier_id)
        if not decision.applied:
            return remember(conn, REDEEM_TASK, request.request_id, fingerprint,
                            {"status": "rejected", "reason": decision.reason,
                             "account": views.account_json(account)})
        what = f"{count} x {reward.name}" if reward else f"{decision.points} points"
        entry, account = write_entry(
            conn, account, amount=-decision.points, total="redeemed", total_delta=decision.points,
            type="REDEEM", description=f"Redeemed {what}"[:256],
            idempotency_key=f"redeem:{request.request_id}", actor=request.actor)
        redemption = conn.execute(redemptions.insert().values(
            account_id=account["id"], reward_id=reward.id if reward else None,
            reward_revision=reward.revision if reward else None, points=decision.points,
            count=count, code=new_code(), reference_id=request.reference_id,
            request_id=request.request_id, actor=request.actor, redeem_entry_id=entry,
        ).returning(redemptions)).mappings().one()
        return remember(conn, REDEEM_TASK, request.request_id, fingerprint,
                        {"status": "applied", "transaction_id": str(entry),
                         "redemption": views.redemption_json(redemption),
                         "account": views.account_json(account)}, entry)

    return work


def refund_transaction(engine: Engine, request: RefundTransactionRequest) -> dict[str, Any]:
    """Give back a REDEEM's points as one REFUND, at most once; repeats get the first result."""
    return run(engine, refund_work(request))


def refund_work(request: RefundTransactionRequest) -> Callable[[Connection], dict[str, Any]]:
    fingerprint = request.fingerprint()

    def reject(conn: Connection, reason: str, account: Mapping[Any, Any] | None
               ) -> dict[str, Any]:
        return remember(conn, REFUND_TASK, request.request_id, fingerprint, {
            "status": "rejected", "reason": reason,
            "account": views.account_json(account) if account is not None else None})

    def work(conn: Connection) -> dict[str, Any]:
        redeem = conn.execute(select(ledger_entries.c.id, ledger_entries.c.account_id,
                                     ledger_entries.c.type, ledger_entries.c.amount)
                              .where(ledger_entries.c.id == UUID(request.transaction_id))
                              ).first()
        # The account's lock serialises the repeats of this request and every refund of
        # this REDEEM; a transaction that does not exist has no account to lock, and two
        # such first deliveries meet at the request's primary key.
        account = lock_account(conn, account_id=redeem.account_id) if redeem else None
        first = first_result(conn, REFUND_TASK, request.request_id, fingerprint)
        if first is not None:
            return first
        if redeem is None or account is None:
            return reject(conn, "transaction_not_found", None)
        refunded = conn.execute(select(ledger_entries.c.id).where(
            ledger_entries.c.refunds_entry_id == redeem.id)).first() is not None
        points = -redeem.amount
        reason = refund_refused(entry_type=redeem.type, refunded=refunded,
                                balance=account["balance"], points=points)
        if reason is not None:
            return reject(conn, reason, account)
        entry, account = write_entry(
            conn, account, amount=points, total="redeemed", total_delta=-points, type="REFUND",
            description=request.description or "Redemption refunded",
            idempotency_key=f"refund:{request.request_id}", actor=request.actor,
            refunds_entry_id=redeem.id)
        redemption = conn.execute(
            update(redemptions).where(redemptions.c.redeem_entry_id == redeem.id)
            .values(status="REFUNDED", refund_entry_id=entry, refunded_at=func.now())
            .returning(redemptions)).mappings().one()
        return remember(conn, REFUND_TASK, request.request_id, fingerprint,
                        {"status": "applied", "transaction_id": str(entry),
                         "redemption": views.redemption_json(redemption),
                         "account": views.account_json(account)}, entry)

    return work


def list_redemptions(engine: Engine, account_id: UUID, limit: int,
                     cursor: str | None = None) -> dict[str, Any]:
    """An account's redemptions, newest first, a page at a time."""
    query = (select(redemptions).where(redemptions.c.account_id == account_id)
             .order_by(redemptions.c.created_at.desc(), redemptions.c.id.desc()))
    if cursor:
        try:
            at, after = json.loads(views.decode_cursor(cursor))
            position = (datetime.fromisoformat(at), UUID(after))
        except (ValueError, TypeError):
            raise views.InvalidCursor(f"invalid cursor {cursor!r}: pass a next_cursor printed"
                                      " by a list") from None
        query = query.where(func.row(redemptions.c.created_at, redemptions.c.id)
                            < func.row(*position))
    rows = read(engine, lambda conn: conn.execute(query.limit(limit + 1)).mappings().all())
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = views.encode_cursor(json.dumps(
        [rows[-1]["created_at"].isoformat(), str(rows[-1]["id"])])) if more else None
    return views.page([views.redemption_json(r) for r in rows], next_cursor)


def get_redemption(engine: Engine, *, redemption_id: str | None = None,
                   code: str | None = None) -> dict[str, Any]:
    query = select(redemptions)
    if redemption_id is not None:
        try:
            query = query.where(redemptions.c.id == UUID(redemption_id))
        except ValueError:
            raise InvalidPayload(f"redemption id {redemption_id!r} is not a UUID") from None
    else:
        query = query.where(redemptions.c.code == normalise_code(code or ""))
    row = read(engine, lambda conn: conn.execute(query).mappings().first())
    if row is None:
        raise RedemptionNotFound("no such redemption")
    return views.redemption_json(row)


def _tier_of(conn: Connection, account_id: UUID) -> int | None:
    """The account's tier now (0011), which prices a reward with per-tier costs; none while
    tiers are DISABLED."""
    return conn.execute(text(
        "SELECT x.tier_id FROM account_tiers x JOIN program p ON p.id = 1"
        " WHERE x.account_id = :a AND p.tiers_status <> 'DISABLED'"), {"a": account_id}
    ).scalar_one_or_none()
