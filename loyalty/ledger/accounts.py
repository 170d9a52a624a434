"""Accounts and what happened to them: locks for writers, reads and pages for everyone else."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Engine, func, select

from loyalty import views
from loyalty.errors import AccountNotFound, InvalidPayload
from loyalty.ledger.boundary import read
from loyalty.ledger.statements import ACCOUNT, ACCOUNT_ROW
from loyalty.tables import accounts, contacts, ledger_entries, order_refunds, processed_events

POINTS = ("balance", "earned", "adjusted", "redeemed", "expired", "reversed")


def lock_account(conn: Connection, *, account_id: UUID | None = None,
                 contact_id: str | None = None) -> Mapping[Any, Any] | None:
    """The account, locked until the transaction ends: it serialises its writers."""
    query = ACCOUNT_ROW.with_for_update(of=accounts)
    if account_id is not None:
        query = query.where(accounts.c.id == account_id)
    else:
        query = query.where(accounts.c.contact_id == contact_id)
    return conn.execute(query).mappings().first()


def get_account(engine: Engine, *, account_id: str | None = None,
                contact_id: str | None = None, member_id: str | None = None) -> dict[str, Any]:
    query = ACCOUNT
    if account_id is not None:
        query = query.where(accounts.c.id == _uuid(account_id, "account id"))
    elif contact_id is not None:
        query = query.where(accounts.c.contact_id == contact_id)
    else:
        query = query.where(contacts.c.member_id == member_id)
    row = read(engine, lambda conn: conn.execute(query).mappings().first())
    if row is None:
        raise AccountNotFound("no such loyalty account")
    return views.account_json(row)


def list_accounts(engine: Engine, limit: int, cursor: str | None = None) -> dict[str, Any]:
    query = ACCOUNT.order_by(accounts.c.id)
    if cursor:
        try:
            after = UUID(views.decode_cursor(cursor))
        except ValueError:
            raise views.InvalidCursor(f"invalid cursor {cursor!r}: pass a next_cursor printed"
                                      " by a list") from None
        query = query.where(accounts.c.id > after)
    return page(engine, query, limit, "id", views.account_json)


def page(engine: Engine, query: Any, limit: int, key: str,
         shape: Callable[[Mapping[Any, Any]], dict[str, Any]]) -> dict[str, Any]:
    """One page plus the cursor of the next: fetch one row more than asked to know."""
    rows = read(engine, lambda conn: conn.execute(query.limit(limit + 1)).mappings().all())
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = views.encode_cursor(str(rows[-1][key])) if more else None
    return views.page([shape(r) for r in rows], next_cursor)


def list_transactions(engine: Engine, *, account_id: str | None = None,
                      contact_id: str | None = None, type_: str | None = None, limit: int = 50,
                      cursor: str | None = None) -> dict[str, Any]:
    account = get_account(engine, account_id=account_id, contact_id=contact_id)
    # A REVERSE's source carries its refund's due, taken and shortfall.
    query = (
        select(ledger_entries, order_refunds.c.due, order_refunds.c.taken,
               order_refunds.c.shortfall)
        .outerjoin(order_refunds, order_refunds.c.reverse_entry_id == ledger_entries.c.id)
        .where(ledger_entries.c.account_id == UUID(account["id"]))
        .order_by(ledger_entries.c.seq.desc())
    )
    if type_:
        query = query.where(ledger_entries.c.type == type_)
    if cursor:
        query = query.where(ledger_entries.c.seq < views.decode_int_cursor(cursor))
    return page(engine, query, limit, "seq", views.entry_json)


def list_events(engine: Engine, *, contact_id: str | None = None, outcome: str | None = None,
                limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
    """Processed events, newest first, by contact or by outcome."""
    query = select(processed_events).order_by(processed_events.c.processed_at.desc(),
                                              processed_events.c.event_id.desc())
    if contact_id is not None:
        query = query.where(processed_events.c.contact_id == contact_id)
    if outcome is not None:
        query = query.where(processed_events.c.outcome == outcome)
    if cursor:
        try:
            at, event_id = json.loads(views.decode_cursor(cursor))
            after = (datetime.fromisoformat(at), str(event_id))
        except (ValueError, TypeError):
            raise views.InvalidCursor(f"invalid cursor {cursor!r}: pass a next_cursor printed"
                                      " by a list") from None
        query = query.where(func.row(processed_events.c.processed_at,
                                     processed_events.c.event_id) < func.row(*after))
    rows = read(engine, lambda conn: conn.execute(query.limit(limit + 1)).mappings().all())
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = views.encode_cursor(json.dumps(
        [rows[-1]["processed_at"].isoformat(), rows[-1]["event_id"]])) if more else None
    return views.page([views.event_json(r) for r in rows], next_cursor)


def totals(engine: Engine) -> dict[str, Any]:
    query = select(
        func.count(),
        *(func.coalesce(func.sum(accounts.c[name]), 0) for name in POINTS),
    )
    row = read(engine, lambda conn: conn.execute(query).one())
    by_tier = read(engine, lambda conn: conn.exec_driver_sql(TOTALS_BY_TIER).mappings().all())
    return {"points": {name: int(v) for name, v in zip(POINTS, row[1:], strict=True)},
            "accounts": row[0],
            "tiers": [{"id": t["id"], "name": t["name"], "accounts": t["accounts"],
                       "balance": int(t["balance"])} for t in by_tier]}


#: Accounts and balances per tier (0011), lowest tier first; the rest are at the base level.
TOTALS_BY_TIER = (
    "SELECT t.id, t.name, count(a.id) AS accounts, COALESCE(sum(a.balance), 0) AS balance"
    " FROM tiers t LEFT JOIN account_tiers x ON x.tier_id = t.id"
    " LEFT JOIN accounts a ON a.id = x.account_id"
    " GROUP BY t.id, t.name, t.required_points ORDER BY t.required_points")


def _uuid(value: str, what: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise InvalidPayload(f"{what} {value!r} is not a UUID") from None
