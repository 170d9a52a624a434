"""Webhook subscriptions and their deliveries: the SQL of both.

A delivery is one event for one subscription, with the exact body to sign and send.
Deliveries are made by the relay in the transaction that marks their events delivered
(`fan_out`), so an event is never half fanned out. They are sent oldest first, but only
the first pending delivery of each (subscription, account) is ever due (`take_due`): a
delivery waiting for its retry holds its account's later ones back, which keeps an
account's events in order for every subscriber, across relays.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Engine, text

from loyalty.errors import LoyaltyError
from loyalty.ledger.boundary import run


class SubscriptionNotFound(LoyaltyError):
    reason = "subscription_not_found"


class DeliveryNotFound(LoyaltyError):
    reason = "delivery_not_found"


@dataclass(frozen=True)
class Due:
    """A delivery to attempt now, with what it needs to be signed and sent."""

    id: int
    subscription_id: int
    url: str
    secret: str
    event_id: UUID
    event_type: str
    body: str
    attempts: int
    retry_from: datetime


def add_subscription(conn: Connection, url: str, event_types: Sequence[str] | None,
                     secret: str) -> dict[str, Any]:
    row = conn.execute(text("""
        INSERT INTO public.webhook_subscriptions (url, event_types, secret)
        VALUES (:url, :types, :secret) RETURNING id, url, event_types, secret, created_at, removed_at
    """), {"url": url, "types": list(event_types) if event_types else None,
           "secret": secret}).mappings().one()
    return dict(row)


def list_subscriptions(conn: Connection, include_removed: bool) -> list[dict[str, Any]]:
    rows = conn.execute(text("""
        SELECT id, url, event_types, secret, created_at, removed_at FROM public.webhook_subscriptions
        WHERE :all OR removed_at IS NULL ORDER BY id
    """), {"all": include_removed}).mappings().all()
    return [dict(r) for r in rows]


def remove_subscription(conn: Connection, subscription_id: int) -> dict[str, Any]:
    """Stop a subscription; its pending deliveries fail (kept, redeliverable)."""
    row = conn.execute(text("""
        UPDATE public.webhook_subscriptions SET removed_at = now()
        WHERE id = :id AND removed_at IS NULL RETURNING id, url, event_types, secret, created_at, removed_at
    """), {"id": subscription_id}).mappings().first()
    if row is None:
        raise SubscriptionNotFound(f"no active webhook subscription {subscription_id}")
    conn.execute(text("""
        UPDATE public.webhook_deliveries
        SET status = 'failed', last_error = 'subscription removed'
        WHERE subscription_id = :id AND status = 'pending'
    """), {"id": subscription_id})
    return dict(row)


def fan_out(conn: Connection, events: Sequence[tuple[UUID, str, UUID, int, int, str]]) -> int:
    """One delivery per event and active subscription that wants its type, set-based.

    `events`: (event_id, type, account_id, account_revision, position, body). A delivery
    that already exists (a relay that died after fanning out) is kept as it is.
    """
    if not events:
        return 0
    ids, types, accounts, revisions, positions, bodies = (list(c) for c in zip(*events, strict=True))
    result = conn.execute(text("""
        INSERT INTO public.webhook_deliveries
            (subscription_id, event_id, event_type, account_id, account_revision,
             event_position, body)
        SELECT s.id, e.event_id, e.type, e.account_id, e.revision, e.position, e.body
        FROM unnest(CAST(:ids AS uuid[]), CAST(:types AS text[]), CAST(:accounts AS uuid[]),
                    CAST(:revisions AS bigint[]), CAST(:positions AS bigint[]),
                    CAST(:bodies AS text[]))
             AS e(event_id, type, account_id, revision, position, body)
        JOIN public.webhook_subscriptions s
          ON s.removed_at IS NULL AND (s.event_types IS NULL OR e.type = ANY(s.event_types))
        ORDER BY e.position, s.id
        ON CONFLICT (subscription_id, event_id) DO NOTHING
    """), {"ids": ids, "types": types, "accounts": accounts, "revisions": revisions,
           "positions": positions, "bodies": bodies})
    return result.rowcount


_TAKE_DUE = text("""
    SELECT d.id, d.subscription_id, s.url, s.secret, d.event_id, d.event_type, d.body,
           d.attempts, d.retry_from
    FROM public.webhook_deliveries d
    JOIN public.webhook_subscriptions s ON s.id = d.subscription_id
    WHERE d.status = 'pending' AND d.next_attempt_at <= now()
      AND NOT EXISTS (
          SELECT 1 FROM public.webhook_deliveries e
          WHERE e.subscription_id = d.subscription_id AND e.account_id = d.account_id
            AND e.status = 'pending'
            AND (e.account_revision, e.event_position) < (d.account_revision, d.event_position))
    ORDER BY d.id
    LIMIT :limit
    FOR UPDATE OF d SKIP LOCKED
""")


def take_due(conn: Connection, limit: int) -> list[Due]:
    """Lock the deliveries due now that head their (subscription, account)."""
    return [Due(*row) for row in conn.execute(_TAKE_DUE, {"limit": limit}).all()]


def delivered(conn: Connection, delivery_id: int, status_code: int) -> None:
    conn.execute(text("""
        UPDATE public.webhook_deliveries
        SET status = 'delivered', delivered_at = now(), last_attempt_at = now(),
            attempts = attempts + 1, last_status_code = :code, last_error = NULL
        WHERE id = :id
    """), {"id": delivery_id, "code": status_code})


def attempt_failed(conn: Connection, delivery_id: int, status_code: int | None, error: str,
                   retry_in: float | None) -> None:
    """Record a failed attempt: due again in `retry_in` seconds, or failed for good (None)."""
    conn.execute(text("""
        UPDATE public.webhook_deliveries
        SET attempts = attempts + 1, last_attempt_at = now(), last_status_code = :code,
            last_error = left(:error, 1000),
            status = CASE WHEN CAST(:retry_in AS float8) IS NULL THEN 'failed'
                          ELSE 'pending' END,
            next_attempt_at = CASE WHEN CAST(:retry_in AS float8) IS NULL THEN next_attempt_at
                                   ELSE now() + make_interval(secs => CAST(:retry_in AS float8))
                              END
        WHERE id = :id
    """), {"id": delivery_id, "code": status_code, "error": error, "retry_in": retry_in})


def list_deliveries(conn: Connection, subscription_id: int | None, status: str | None,
                    limit: int) -> list[dict[str, Any]]:
    rows = conn.execute(text("""
        SELECT d.id, d.subscription_id, d.event_id, d.event_type, d.account_id, d.status,
               d.attempts, d.created_at,
               d.last_attempt_at, d.next_attempt_at, d.delivered_at, d.last_status_code, d.last_error
        FROM public.webhook_deliveries d
        WHERE (CAST(:sub AS bigint) IS NULL OR d.subscription_id = CAST(:sub AS bigint))
          AND (CAST(:status AS text) IS NULL OR d.status = CAST(:status AS text))
        ORDER BY d.id DESC LIMIT :limit
    """), {"sub": subscription_id, "status": status, "limit": limit}).mappings().all()
    return [dict(r) for r in rows]


def redeliver(conn: Connection, delivery_id: int | None, subscription_id: int | None
              ) -> list[int]:
    """Failed deliveries back to pending, due now, with a new retry window."""
    if delivery_id is not None:
        found = conn.execute(text("SELECT status FROM public.webhook_deliveries WHERE id = :id"),
                             {"id": delivery_id}).scalar()
        if found is None:
            raise DeliveryNotFound(f"no webhook delivery {delivery_id}")
    elif conn.execute(text("SELECT 1 FROM public.webhook_subscriptions WHERE id = :id"
                           " AND removed_at IS NULL"), {"id": subscription_id}).first() is None:
        raise SubscriptionNotFound(f"no active webhook subscription {subscription_id}")
    rows = conn.execute(text("""
        UPDATE public.webhook_deliveries d
        SET status = 'pending', next_attempt_at = now(), retry_from = now()
        FROM public.webhook_subscriptions s
        WHERE s.id = d.subscription_id AND s.removed_at IS NULL AND d.status = 'failed'
          AND (CAST(:id AS bigint) IS NULL OR d.id = CAST(:id AS bigint))
          AND (CAST(:sub AS bigint) IS NULL OR d.subscription_id = CAST(:sub AS bigint))
        RETURNING d.id
    """), {"id": delivery_id, "sub": subscription_id}).scalars().all()
    return sorted(rows)


def prune_delivered(conn: Connection, older_than_seconds: int, limit: int) -> int:
    """Delete delivered deliveries older than the retention; failed ones are kept."""
    result = conn.execute(text("""
        DELETE FROM public.webhook_deliveries WHERE id IN (
            SELECT id FROM public.webhook_deliveries
            WHERE status = 'delivered'
              AND delivered_at < now() - make_interval(secs => :age)
            ORDER BY id LIMIT :limit)
    """), {"age": older_than_seconds, "limit": limit})
    return result.rowcount


def counts(conn: Connection) -> dict[str, int]:
    rows = conn.execute(text("SELECT status, count(*) FROM public.webhook_deliveries"
                             " GROUP BY status")).all()
    return {status: int(n) for status, n in rows}


def send_due(engine: Engine, limit: int, send: Callable[[Due], tuple[bool, int | None, str]],
             retry_in: Callable[[Due], float | None]) -> list[tuple[Due, bool]]:
    """One pass: lock the due deliveries, `send` each (ok, status code, error) and record
    it; a failure is due again after `retry_in(due)` seconds, or failed for good (None).

    The rows stay locked while they are sent, so another relay skips them and, by
    `take_due`, every later delivery of their accounts.
    """
    def work(conn: Connection) -> list[tuple[Due, bool]]:
        done = []
        for due in take_due(conn, limit):
            ok, code, error = send(due)
            if ok:
                delivered(conn, due.id, code or 200)
            else:
                attempt_failed(conn, due.id, code, error, retry_in(due))
            done.append((due, ok))
        return done

    return run(engine, work)
