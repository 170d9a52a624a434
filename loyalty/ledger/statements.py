"""The set-based statements: constant SQL text with one array per column.

Constant text is compiled and planned once; an IN list or a VALUES list of 500
rows would be rebuilt in Python for every batch, which costs more than
PostgreSQL spends running the statement (docs/performance.md).
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Label, literal_column, select

from loyalty.tables import accounts, contacts

#: The next expiration, as Wix shows it (migration 0011): in `lots` mode the oldest
#: available lot's, with every lot that became available on the same UTC day; in
#: `inactivity` mode the last activity's plus the months, for the percentage of the
#: balance that the job would take (rounded down, as `expiring.inactivity_points`).
EXPIRATION_DATE: Label[Any] = literal_column(
    "(SELECT CASE p.expiration_mode"
    " WHEN 'lots' THEN (SELECT min(l.available_at) FROM point_lots l"
    "  WHERE l.account_id = accounts.id AND l.remaining > 0 AND l.status = 'available')"
    "  + make_interval(months => p.expiration_months)"
    " WHEN 'inactivity' THEN CASE WHEN accounts.balance * p.expiration_percentage / 100 > 0"
    "  THEN accounts.last_activity_at + make_interval(months => p.expiration_months) END"
    " END FROM program p WHERE p.id = 1)").label("expiration_date")
EXPIRING_POINTS: Label[Any] = literal_column(
    "(SELECT CASE p.expiration_mode"
    " WHEN 'lots' THEN (SELECT sum(l.remaining) FROM point_lots l"
    "  WHERE l.account_id = accounts.id AND l.remaining > 0 AND l.status = 'available'"
    "  AND date_trunc('day', l.available_at AT TIME ZONE 'UTC')"
    "  = (SELECT date_trunc('day', min(f.available_at) AT TIME ZONE 'UTC') FROM point_lots f"
    "     WHERE f.account_id = accounts.id AND f.remaining > 0 AND f.status = 'available'))"
    " WHEN 'inactivity' THEN accounts.balance * p.expiration_percentage / 100"
    " END FROM program p WHERE p.id = 1)").label("expiring_points")

#: An account with its contact's member_id, as writers lock it.
ACCOUNT_ROW = select(accounts, contacts.c.member_id).join(
    contacts, contacts.c.contact_id == accounts.c.contact_id
)
#: Points of orders still waiting out `pending_days`: not in the balance, not spendable.
PENDING_POINTS: Label[Any] = literal_column(
    "(SELECT COALESCE(sum(l.remaining), 0) FROM point_lots l WHERE l.account_id = accounts.id"
    " AND l.remaining > 0 AND l.status = 'pending')").label("pending_points")
#: An account as reads show it: with its pending points and next expiration.
#: The account's tier (0011), null for the base level.
TIER: Label[Any] = literal_column(
    "(SELECT jsonb_build_object('id', t.id, 'name', t.name, 'points', x.points,"
    " 'updated_at', x.updated_at) FROM account_tiers x JOIN tiers t ON t.id = x.tier_id"
    " WHERE x.account_id = accounts.id)").label("tier")
ACCOUNT = ACCOUNT_ROW.add_columns(PENDING_POINTS, EXPIRATION_DATE, EXPIRING_POINTS, TIER)


def set_based(sql: str) -> str:
    """A statement for `exec_driver_sql` whose `:name` arrays are sent in binary.

    psycopg quotes every element of an array sent as text, one regular expression
    each; binary arrays are packed in C.
    """
    return re.sub(r"(?<![:\w]):(\w+)", r"%(\1)b", sql)


def unnest_insert(table: str, columns: dict[str, str], stamp: str | None = None) -> str:
    """A multi-row INSERT whose text never changes: one array per column, rows in order."""
    names = ", ".join(columns)
    arrays = ", ".join(f"CAST(:{c} AS {t}[])" for c, t in columns.items())
    # `stamp`: a time column set when the rows are written, not when the batch began.
    into, chosen = (f"{names}, {stamp}", f"{names}, clock_timestamp()") if stamp \
        else (names, names)
    sql = (f"INSERT INTO {table} ({into}) SELECT {chosen} FROM unnest({arrays})"  # noqa: S608
           f" WITH ORDINALITY AS rows({names}, n) ORDER BY n")
    return set_based(sql)


def columns(rows: list[dict[str, Any]], names: dict[str, str]) -> dict[str, list[Any]]:
    """Rows turned into the column arrays that `unnest_insert` takes; a column a row does
    not name is NULL (as `tier_id`, which only an EARN at a tier carries)."""
    return {c: [row.get(c) for row in rows] for c in names}


# -- earning -----------------------------------------------------------------------

LOCK_ACCOUNTS_BY_CONTACT = set_based(
    "SELECT id, contact_id, balance, revision FROM accounts"
    " WHERE contact_id = ANY(CAST(:contacts AS text[])) ORDER BY id FOR UPDATE")
#: One primary-key probe per event_id: `event_id = ANY(:events)` as a prepared statement
#: keeps a generic plan made while the table was small, a scan that grows with the table
#: (a second 20,000-event drain ran 4x slower for it).
SEEN_EVENTS = set_based(
    "SELECT p.event_id, p.fingerprint, p.outcome, p.points, p.account_id, p.ledger_entry_id,"
    " p.detail FROM unnest(CAST(:events AS text[])) AS k(event_id)"
    " JOIN processed_events p ON p.event_id = k.event_id")
#: Which (account, order) pairs have earned already: one index probe per pair
#: (uq_ledger_entries_one_order), where a row-value IN list is planned as a scan.
#: An order whose points are still pending (0011) has earned too (uq_point_lots_one_order).
EARNED_ORDERS = set_based(
    "SELECT e.account_id, e.order_id, e.event_id, pe.payload FROM unnest(CAST(:accounts AS uuid[]),"
    " CAST(:orders AS text[])) AS p(account_id, order_id)"
    " JOIN ledger_entries e ON e.account_id = p.account_id AND e.order_id = p.order_id"
    " AND e.type = 'EARN' AND e.order_id IS NOT NULL"
    " LEFT JOIN processed_events pe ON pe.event_id = e.event_id"
    " UNION ALL"
    " SELECT l.account_id, l.order_id, l.event_id, pe.payload FROM unnest("
    " CAST(:accounts AS uuid[]), CAST(:orders AS text[])) AS p(account_id, order_id)"
    " JOIN point_lots l ON l.account_id = p.account_id AND l.order_id = p.order_id"
    " AND l.status = 'pending' AND l.order_id IS NOT NULL"
    " LEFT JOIN processed_events pe ON pe.event_id = l.event_id")
#: The tiers of these accounts (0011), none while tiers are DISABLED.
TIERS_OF = set_based(
    "SELECT x.account_id, x.tier_id FROM unnest(CAST(:ids AS uuid[])) AS k(id)"
    " JOIN account_tiers x ON x.account_id = k.id AND x.tier_id IS NOT NULL"
    " JOIN program p ON p.id = 1 AND p.tiers_status <> 'DISABLED'")
#: An order's points waiting out `pending_days` (0011).
PENDING_LOT_COLUMNS = {
    "account_id": "uuid", "amount": "bigint", "remaining": "bigint", "status": "text",
    "available_at": "timestamptz", "order_id": "text", "event_id": "text", "rule_id": "bigint",
    "rule_revision": "bigint", "order_total": "numeric", "currency": "text", "tier_id": "bigint",
}
INSERT_PENDING_LOTS = unnest_insert("point_lots", PENDING_LOT_COLUMNS)
#: One UPDATE for all credited accounts; the revision counts changes, one per entry.
CREDIT_ACCOUNTS = set_based(
    "UPDATE accounts a SET balance = a.balance + d.points, earned = a.earned + d.points,"
    " revision = a.revision + d.entries, updated_at = now(), last_activity_at = now()"
    " FROM unnest(CAST(:ids AS uuid[]), CAST(:points AS bigint[]), CAST(:entries AS bigint[]))"
    " AS d(id, points, entries) WHERE a.id = d.id")

ENTRY_COLUMNS = {
    "id": "uuid", "account_id": "uuid", "type": "text", "amount": "bigint",
    "balance_after": "bigint", "description": "text", "idempotency_key": "text",
    "event_type": "text", "event_id": "text", "order_id": "text", "rule_id": "bigint",
    "rule_revision": "bigint", "account_revision": "bigint", "order_total": "numeric",
    "currency": "text", "activity": "text", "reference_id": "text", "refund_id": "text",
    "reverses_entry_id": "uuid", "tier_id": "bigint",
}
PROCESSED_COLUMNS = {
    "event_id": "text", "event_type": "text", "fingerprint": "text", "contact_id": "text",
    "account_id": "uuid", "order_id": "text", "outcome": "text", "points": "bigint",
    "ledger_entry_id": "uuid", "payload": "jsonb", "detail": "jsonb",
}
INSERT_ENTRIES = unnest_insert("ledger_entries", ENTRY_COLUMNS)
INSERT_PROCESSED = unnest_insert("processed_events", PROCESSED_COLUMNS, "processed_at")

# -- activities and refunds (0009) ---------------------------------------------------

#: Which (account, activity, reference) triples have earned already
#: (uq_ledger_entries_one_activity_reference).
EARNED_REFERENCES = set_based(
    "SELECT e.account_id, e.activity, e.reference_id FROM unnest(CAST(:accounts AS uuid[]),"
    " CAST(:activities AS text[]), CAST(:refs AS text[])) AS p(account_id, activity, ref)"
    " JOIN ledger_entries e ON e.account_id = p.account_id AND e.activity = p.activity"
    " AND e.reference_id = p.ref AND e.type = 'EARN' AND e.reference_id IS NOT NULL")
#: What each refunded order earned, on what total and in what currency: its EARN, or
#: (an order that earned nothing) its first `no_points` record.
#: An order that earned through a pending lot (0011) earned the lot's amount (its EARN,
#: once available, is what refunds left of it), and while pending has `pending` left.
REFUNDED_ORDERS = set_based(
    "SELECT p.account_id, p.order_id, e.id AS earn_entry_id,"
    " COALESCE(l.amount, e.amount, 0) AS earned, l.id AS lot_id,"
    " CASE WHEN l.status = 'pending' THEN l.remaining END AS pending,"
    " COALESCE(e.order_total, l.order_total, CAST(pe.payload ->> 'total' AS numeric),"
    "          CAST(np.payload ->> 'total' AS numeric)) AS total,"
    " COALESCE(e.currency, l.currency, pe.payload ->> 'currency', np.payload ->> 'currency')"
    " AS currency"
    " FROM unnest(CAST(:accounts AS uuid[]), CAST(:orders AS text[])) AS p(account_id, order_id)"
    " LEFT JOIN ledger_entries e ON e.account_id = p.account_id AND e.order_id = p.order_id"
    " AND e.type = 'EARN' AND e.order_id IS NOT NULL"
    " LEFT JOIN point_lots l ON l.account_id = p.account_id AND l.order_id = p.order_id"
    " AND l.order_id IS NOT NULL"
    " LEFT JOIN processed_events pe ON pe.event_id = e.event_id"
    " LEFT JOIN LATERAL (SELECT x.payload FROM processed_events x"
    "   WHERE x.account_id = p.account_id AND x.order_id = p.order_id"
    "   AND x.outcome = 'no_points' AND x.order_id IS NOT NULL"
    "   ORDER BY x.processed_at LIMIT 1) np ON e.id IS NULL AND l.id IS NULL"
    " WHERE e.id IS NOT NULL OR np.payload IS NOT NULL OR l.id IS NOT NULL")
#: The refunds these orders already had.
ORDER_REFUNDS = set_based(
    "SELECT r.account_id, r.order_id, r.refund_id, r.amount, r.currency, r.taken, r.cancelled"
    " FROM unnest(CAST(:accounts AS uuid[]), CAST(:orders AS text[])) AS p(account_id, order_id)"
    " JOIN order_refunds r ON r.account_id = p.account_id AND r.order_id = p.order_id")
#: One UPDATE for all accounts that refunds took points from.
DEBIT_REVERSED = set_based(
    "UPDATE accounts a SET balance = a.balance - d.points, reversed = a.reversed + d.points,"
    " revision = a.revision + d.entries, updated_at = now(), last_activity_at = now()"
    " FROM unnest(CAST(:ids AS uuid[]), CAST(:points AS bigint[]), CAST(:entries AS bigint[]))"
    " AS d(id, points, entries) WHERE a.id = d.id")
REFUND_COLUMNS = {
    "account_id": "uuid", "order_id": "text", "refund_id": "text", "event_id": "text",
    "amount": "numeric", "currency": "text", "earn_entry_id": "uuid",
    "reverse_entry_id": "uuid", "due": "bigint", "taken": "bigint", "shortfall": "bigint",
    "cancelled": "bigint",
}
#: What refunds cancel of pending lots (0011), one row per lot.
CANCEL_PENDING = set_based(
    "UPDATE point_lots l SET remaining = l.remaining - c.points"
    " FROM unnest(CAST(:ids AS bigint[]), CAST(:points AS bigint[])) AS c(id, points)"
    " WHERE l.id = c.id AND l.status = 'pending'")
INSERT_REFUNDS = unnest_insert("order_refunds", REFUND_COLUMNS)

# -- dead letters --------------------------------------------------------------------

LOCK_LETTERS = set_based(
    "SELECT id, task_name, payload, headers, status, reason FROM dead_letters"
    " WHERE id = ANY(CAST(:ids AS bigint[])) ORDER BY id FOR UPDATE")
LETTERS_REPLAYED = set_based(
    "UPDATE dead_letters d SET status = 'replayed', replayed_at = now(),"
    " replay_outcome = CAST(u.outcome AS jsonb)"
    " FROM unnest(CAST(:ids AS bigint[]), CAST(:outcomes AS text[])) AS u(id, outcome)"
    " WHERE d.id = u.id")
#: A failed replay keeps the reason the letter was kept for (and its error detail);
#: what the replay ran into goes in replay_outcome.
LETTERS_FAILED_AGAIN = set_based(
    "UPDATE dead_letters d SET attempts = d.attempts + 1, last_failed_at = now(),"
    " replay_outcome = CAST(u.outcome AS jsonb)"
    " FROM unnest(CAST(:ids AS bigint[]), CAST(:outcomes AS text[])) AS u(id, outcome)"
    " WHERE d.id = u.id")
