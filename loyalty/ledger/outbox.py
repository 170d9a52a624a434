"""Outgoing events: the outbox rows the triggers of migration 0010 write, taken by relays.

Per-account order across several relays. A relay locks, with `SKIP LOCKED`, only the
*first* undelivered event of each account (its head), then every undelivered event of
those accounts. A second relay cannot take an account's later events while the first
holds its head: they are not heads (an earlier one is undelivered), and the head itself
is skipped as locked. Revisions follow commit order per account (the account row lock
serialises its writers), so a snapshot that sees an event also sees every earlier one of
its account, and "first undelivered" is well defined.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Engine, text

from loyalty.ledger import webhooks
from loyalty.ledger.boundary import run


@dataclass(frozen=True)
class OutboxEvent:
    id: UUID
    position: int
    type: str
    account_id: UUID
    contact_id: str
    account_revision: int
    occurred_at: datetime
    data: dict[str, Any]


_TAKE = text("""
    WITH heads AS (
        SELECT o.account_id FROM public.outbox_events o
        WHERE o.delivered_at IS NULL
          AND NOT EXISTS (
              SELECT 1 FROM public.outbox_events e
              WHERE e.account_id = o.account_id AND e.delivered_at IS NULL
                AND (e.account_revision, e.position) < (o.account_revision, o.position))
        ORDER BY o.position
        LIMIT :accounts
        FOR UPDATE SKIP LOCKED
    )
    SELECT o.id, o.position, o.type, o.account_id, o.contact_id, o.account_revision,
           o.occurred_at, o.data
    FROM public.outbox_events o
    WHERE o.delivered_at IS NULL AND o.account_id IN (SELECT account_id FROM heads)
    ORDER BY o.account_id, o.account_revision, o.position
    LIMIT :limit
    FOR UPDATE
""")


def take(conn: Connection, limit: int) -> list[OutboxEvent]:
    """Lock up to `limit` undelivered events, whole accounts' worth, in each account's order.

    An account cut off by the limit keeps its order: the events left out come after the
    ones taken, and stay undelivered until the next pass.
    """
    rows = conn.execute(_TAKE, {"accounts": limit, "limit": limit}).all()
    return [OutboxEvent(*row) for row in rows]


def mark_delivered(conn: Connection, ids: Sequence[UUID]) -> None:
    conn.execute(text("UPDATE public.outbox_events SET delivered_at = now()"
                      " WHERE id = ANY(:ids) AND delivered_at IS NULL"), {"ids": list(ids)})


def prune(conn: Connection, older_than_seconds: int, limit: int) -> int:
    """Delete up to `limit` events delivered longer ago than the retention; set-based."""
    result = conn.execute(text("""
        DELETE FROM public.outbox_events WHERE id IN (
            SELECT id FROM public.outbox_events
            WHERE delivered_at IS NOT NULL
              AND delivered_at < now() - make_interval(secs => :age)
            ORDER BY delivered_at LIMIT :limit)
    """), {"age": older_than_seconds, "limit": limit})
    return result.rowcount


def backlog(conn: Connection) -> dict[str, Any]:
    """Undelivered events, and the age in seconds of the oldest (0 with none)."""
    row = conn.execute(text("""
        SELECT count(*) AS undelivered,
               COALESCE(EXTRACT(EPOCH FROM now() - min(occurred_at)), 0) AS oldest_age
        FROM public.outbox_events WHERE delivered_at IS NULL
    """)).one()
    return {"undelivered": int(row.undelivered), "oldest_age_seconds": float(row.oldest_age)}


def list_events(conn: Connection, account_id: UUID | None, limit: int) -> list[OutboxEvent]:
    """Events in delivery order (per account), newest accounts' included; for tests and ops."""
    rows = conn.execute(text("""
        SELECT id, position, type, account_id, contact_id, account_revision, occurred_at, data
        FROM public.outbox_events
        WHERE CAST(:account AS uuid) IS NULL OR account_id = CAST(:account AS uuid)
        ORDER BY account_id, account_revision, position LIMIT :limit
    """), {"account": account_id, "limit": limit}).all()
    return [OutboxEvent(*row) for row in rows]


def relay(engine: Engine, limit: int,
          deliver: Callable[[list[OutboxEvent]], list[str]]) -> list[OutboxEvent]:
    """One relay pass in one transaction: lock events, `deliver` them (publish; returns
    each event's body), fan them out to webhook subscriptions, mark them delivered.

    A relay that dies after `deliver` and before the commit leaves them undelivered: the
    next pass delivers them again, with the same ids (at least once).
    """
    def work(conn: Connection) -> list[OutboxEvent]:
        events = take(conn, limit)
        if not events:
            return []
        bodies = deliver(events)
        webhooks.fan_out(conn, [(e.id, e.type, e.account_id, e.account_revision, e.position, b)
                                for e, b in zip(events, bodies, strict=True)])
        mark_delivered(conn, [e.id for e in events])
        return events

    return run(engine, work)
