"""Pending points that become available: the periodic `loyalty.program.activate_points`.

An order's points wait in a pending lot until `occurred_at + pending_days` (earning.py).
This job, in chunks of accounts as `expiring` does, writes each due lot's EARN (with the
rule revision and order total the order was computed from) and credits the account; the
lot trigger of 0011 turns the pending lot into the available one, so the lot keeps its
history. Idempotent: a lot that is no longer pending is not read again, and its EARN's key
is its order event's (`event:<event_id>`), which can be written once.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Engine

from loyalty.ledger.boundary import read, run
from loyalty.ledger.entries import entry_id
from loyalty.ledger.expiring import CHUNK, LOCK
from loyalty.ledger.statements import ENTRY_COLUMNS, INSERT_ENTRIES, columns, set_based
from schemas.events import MAX_BALANCE

log = logging.getLogger(__name__)

PENDING_DUE = set_based(
    "SELECT DISTINCT account_id FROM point_lots WHERE status = 'pending' AND remaining > 0"
    " AND available_at <= CAST(:as_of AS timestamptz) ORDER BY account_id")
DUE_LOTS = set_based(
    "SELECT l.id, l.account_id, l.remaining, l.order_id, l.event_id, l.rule_id,"
    " l.rule_revision, l.order_total, l.currency, l.tier_id"
    " FROM unnest(CAST(:ids AS uuid[])) AS k(id) JOIN point_lots l ON l.account_id = k.id"
    " AND l.status = 'pending' AND l.remaining > 0"
    " AND l.available_at <= CAST(:as_of AS timestamptz)"
    " ORDER BY l.account_id, l.available_at, l.id")
#: Earned, not activity: the customer did nothing today.
CREDIT_EARNED = set_based(
    "UPDATE accounts a SET balance = a.balance + d.points, earned = a.earned + d.points,"
    " revision = a.revision + d.entries, updated_at = now()"
    " FROM unnest(CAST(:ids AS uuid[]), CAST(:points AS bigint[]), CAST(:entries AS bigint[]))"
    " AS d(id, points, entries) WHERE a.id = d.id")


def activate_points(engine: Engine, as_of: datetime) -> dict[str, Any]:
    """Make available every pending lot due at `as_of`."""
    due: list[UUID] = read(engine, lambda conn: [r[0] for r in conn.exec_driver_sql(
        PENDING_DUE, {"as_of": as_of})])
    report: dict[str, Any] = {"as_of": as_of.isoformat(), "accounts": 0, "entries": 0,
                              "points": 0, "chunks": 0}
    for start in range(0, len(due), CHUNK):
        ids = due[start:start + CHUNK]
        accounts, entries, points = run(
            engine, lambda conn, ids=ids: _chunk(conn, ids, as_of))  # type: ignore[misc]
        report["accounts"] += accounts
        report["entries"] += entries
        report["points"] += points
        report["chunks"] += 1
        log.info("activate_points: %d of %d accounts done", start + len(ids), len(due))
    return report


def _chunk(conn: Connection, ids: list[UUID], as_of: datetime) -> tuple[int, int, int]:
    locked = {r["id"]: r for r in conn.exec_driver_sql(LOCK, {"ids": ids}).mappings()}
    balance = {a: r["balance"] for a, r in locked.items()}
    revision = {a: r["revision"] for a, r in locked.items()}
    credits: dict[UUID, tuple[int, int]] = {}
    rows: list[dict[str, Any]] = []
    for lot in conn.exec_driver_sql(DUE_LOTS, {"ids": sorted(locked), "as_of": as_of}).mappings():
        account, points = lot["account_id"], lot["remaining"]
        if balance[account] + points > MAX_BALANCE:
            continue  # stays pending, as an order above the ceiling would not earn
        balance[account] += points
        revision[account] += 1
        rows.append({
            **{c: None for c in ENTRY_COLUMNS}, "id": entry_id(), "account_id": account,
            "type": "EARN", "amount": points, "balance_after": balance[account],
            "account_revision": revision[account],
            "description": f"Order {lot['order_id']}"[:256],
            "idempotency_key": f"event:{lot['event_id']}", "event_type": "order.completed",
            "event_id": lot["event_id"], "order_id": lot["order_id"], "rule_id": lot["rule_id"],
            "rule_revision": lot["rule_revision"], "order_total": lot["order_total"],
            "currency": lot["currency"], "tier_id": lot["tier_id"]})
        done = credits.get(account, (0, 0))
        credits[account] = (done[0] + points, done[1] + 1)
    if not rows:
        return 0, 0, 0
    ids_ = sorted(credits)
    conn.exec_driver_sql(CREDIT_EARNED, {"ids": ids_, "points": [credits[a][0] for a in ids_],
                                         "entries": [credits[a][1] for a in ids_]})
    conn.exec_driver_sql(INSERT_ENTRIES, columns(rows, ENTRY_COLUMNS))
    return len(credits), len(rows), sum(p for p, _n in credits.values())


PENDING_OF = set_based(
    "SELECT l.id, l.account_id, l.order_id, l.event_id, l.amount, l.remaining, l.available_at,"
    " l.created_at FROM accounts a JOIN point_lots l ON l.account_id = a.id"
    " AND l.status = 'pending' AND l.remaining > 0"
    " WHERE (CAST(:account AS uuid) IS NULL OR a.id = CAST(:account AS uuid))"
    " AND (CAST(:contact AS text) IS NULL OR a.contact_id = CAST(:contact AS text))"
    " ORDER BY l.available_at, l.id")


def list_pending(engine: Engine, *, account_id: UUID | None = None,
                 contact_id: str | None = None) -> dict[str, Any]:
    """An account's points still waiting, soonest available first."""
    rows = read(engine, lambda conn: conn.exec_driver_sql(
        PENDING_OF, {"account": account_id, "contact": contact_id}).mappings().all())
    return {"items": [{
        "account_id": str(r["account_id"]), "order_id": r["order_id"],
        "event_id": r["event_id"], "points": r["remaining"], "earned": r["amount"],
        "available_at": r["available_at"].isoformat(), "created_at": r["created_at"].isoformat(),
    } for r in rows], "next_cursor": None}
