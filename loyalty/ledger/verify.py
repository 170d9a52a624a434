"""`loyalty verify`: every ledger invariant checked again, across the whole database.

The triggers and constraints refuse a bad write as it happens; these queries
read what is stored, independently of them, so a rule switched off or bypassed
still shows here.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Engine, text

from loyalty.ledger.boundary import run


def verify(engine: Engine) -> dict[str, Any]:
    """Re-check every ledger invariant across the whole database, independently of triggers."""
    def work(conn: Connection) -> dict[str, Any]:
        conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        violations = []
        for check, sql in CHECKS.items():
            for row in conn.execute(text(sql)).mappings():
                violations.append({"check": check, **{k: _json_value(v) for k, v in row.items()}})
        counts = conn.execute(text(
            "SELECT (SELECT count(*) FROM accounts) AS accounts,"
            " (SELECT count(*) FROM ledger_entries) AS entries,"
            # Order EARNs written before their totals were recorded (migration 0007)
            # cannot be computed again; they are counted, not reported.
            " (SELECT count(*) FROM ledger_entries WHERE type = 'EARN'"
            "  AND event_type = 'order.completed' AND order_total IS NULL)"
            " AS earns_not_recomputable"
        )).mappings().one()
        return {"ok": not violations, "checked": dict(counts), "violations": violations}

    return run(engine, work)


def _json_value(value: Any) -> Any:
    """A violation's column as JSON: ids as text, sums (numeric in SQL) as integers."""
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Decimal):
        return int(value)
    return value


#: How each entry type counts towards an account's totals, as migrations 0008 and 0009
#: have it.
TOTALS = {
    "earned": "sum(amount) FILTER (WHERE type = 'EARN')",
    "adjusted": "sum(amount) FILTER (WHERE type = 'ADJUST')",
    "redeemed": "-sum(amount) FILTER (WHERE type IN ('REDEEM', 'REFUND'))",
    "expired": "-sum(amount) FILTER (WHERE type = 'EXPIRE')",
    "reversed": "-sum(amount) FILTER (WHERE type = 'REVERSE')",
}


def _totals_check(table: str, key: str) -> str:
    """Rows of `table` whose per-type totals are not what the ledger adds up to."""
    kept = ", ".join(f"a.{n}" for n in TOTALS)
    found = ", ".join(f"COALESCE(s.{n}, 0)" for n in TOTALS)
    return (f"SELECT a.{key} AS account_id, {kept},"  # noqa: S608
            f" {', '.join(f'COALESCE(s.{n}, 0) AS ledger_{n}' for n in TOTALS)}"
            f" FROM {table} a LEFT JOIN (SELECT account_id,"
            f" {', '.join(f'{e} AS {n}' for n, e in TOTALS.items())}"
            f" FROM ledger_entries GROUP BY account_id) s ON s.account_id = a.{key}"
            f" WHERE ({kept}) IS DISTINCT FROM ({found})")


CHECKS = {
    "balance_not_negative": "SELECT id AS account_id, balance FROM accounts WHERE balance < 0",
    "balance_adds_up": """
        SELECT id AS account_id, balance, earned, adjusted, redeemed, expired, reversed
        FROM accounts WHERE balance <> earned + adjusted - redeemed - expired - reversed""",
    "balance_equals_ledger": """
        SELECT a.id AS account_id, a.balance, COALESCE(s.total, 0) AS ledger_sum
        FROM accounts a LEFT JOIN (
            SELECT account_id, sum(amount) AS total FROM ledger_entries GROUP BY account_id
        ) s ON s.account_id = a.id
        WHERE a.balance <> COALESCE(s.total, 0)""",
    "totals_equal_ledger": _totals_check("accounts", "id"),
    # The totals the database keeps (`ledger_totals`, which the COMMIT check reads).
    "ledger_totals_equal_ledger": _totals_check("ledger_totals", "account_id"),
    "balance_after_chain": """
        SELECT account_id, id AS entry_id, expected, balance_after FROM (
            SELECT account_id, id, balance_after,
                   COALESCE(lag(balance_after) OVER w, 0) + amount AS expected
            FROM ledger_entries WINDOW w AS (PARTITION BY account_id ORDER BY seq)
        ) chained WHERE balance_after <> expected""",
    "revision_counts_changes": """
        SELECT a.id AS account_id, a.revision, 1 + COALESCE(n.entries, 0) AS expected
        FROM accounts a LEFT JOIN (
            SELECT account_id, count(*) AS entries FROM ledger_entries GROUP BY account_id
        ) n ON n.account_id = a.id
        WHERE a.revision <> 1 + COALESCE(n.entries, 0)""",
    "revision_chain": """
        SELECT account_id, id AS entry_id, seq, account_revision, expected FROM (
            SELECT account_id, id, seq, account_revision,
                   1 + row_number() OVER (PARTITION BY account_id ORDER BY seq) AS expected
            FROM ledger_entries
        ) chained WHERE account_revision <> expected""",
    # Two independent orders of an account's entries, by seq and by revision, must agree;
    # and every seq must be one the sequence issued.
    "seq_order": """
        SELECT account_id, id AS entry_id, seq, previous_seq FROM (
            SELECT account_id, id, seq,
                   lag(seq) OVER (PARTITION BY account_id ORDER BY account_revision) AS previous_seq
            FROM ledger_entries
        ) ordered WHERE seq <= previous_seq""",
    "seq_issued": """
        SELECT account_id, id AS entry_id, seq FROM ledger_entries
        WHERE seq <= 0 OR seq > COALESCE(
            pg_sequence_last_value('public.ledger_entries_seq_seq'::regclass), 0)""",
    # Each EARN computed again from the rule revision it names and what it was computed
    # from: a rewrite that keeps every balance consistent still shows here.
    "earn_follows_rule": """
        SELECT e.account_id, e.id AS entry_id, e.event_id, e.amount, x.expected
        FROM ledger_entries e
        JOIN earn_rule_revisions r ON r.rule_id = e.rule_id AND r.revision = e.rule_revision
        -- At the tier it names, the rule's points for that tier (0011).
        CROSS JOIN LATERAL (SELECT COALESCE(CAST(r.tier_points ->> CAST(e.tier_id AS text)
                                                 AS bigint), r.points) AS points) t
        CROSS JOIN LATERAL (SELECT CASE
            WHEN r.trigger <> e.event_type THEN NULL
            WHEN r.kind = 'fixed' THEN t.points
            WHEN e.order_total IS NULL THEN e.amount
            WHEN r.currency IS NOT NULL AND r.currency <> e.currency THEN NULL
            ELSE div(e.order_total * t.points, r.money_amount) END AS expected) x
        -- What refunds cancelled while the points were pending (0011) was never entered.
        CROSS JOIN LATERAL (SELECT COALESCE(sum(f.cancelled), 0) AS cancelled
            FROM order_refunds f WHERE e.order_id IS NOT NULL AND f.account_id = e.account_id
            AND f.order_id = e.order_id) c
        WHERE e.type = 'EARN' AND e.amount + c.cancelled IS DISTINCT FROM x.expected""",
    "earn_has_rule_revision": """
        SELECT e.account_id, e.id AS entry_id, e.rule_id, e.rule_revision FROM ledger_entries e
        LEFT JOIN earn_rule_revisions r ON r.rule_id = e.rule_id AND r.revision = e.rule_revision
        WHERE e.type = 'EARN' AND r.rule_id IS NULL
          AND e.rule_revision >= (SELECT min(h.revision) FROM earn_rule_revisions h
                                  WHERE h.rule_id = e.rule_id)""",
    "order_earns_once": """
        SELECT account_id, order_id, count(*) AS earns FROM ledger_entries
        WHERE type = 'EARN' AND order_id IS NOT NULL
        GROUP BY account_id, order_id HAVING count(*) > 1""",
    "signup_earns_once": """
        SELECT account_id, count(*) AS earns FROM ledger_entries
        WHERE type = 'EARN' AND event_type = 'signup'
        GROUP BY account_id HAVING count(*) > 1""",
    "processed_event_matches_entry": """
        SELECT p.event_id, p.points, e.amount FROM processed_events p
        LEFT JOIN ledger_entries e ON e.id = p.ledger_entry_id
        WHERE p.outcome = 'earned' AND (e.id IS NULL OR e.amount <> p.points
              OR e.event_id IS DISTINCT FROM p.event_id OR e.account_id <> p.account_id)""",
    "entry_has_processed_event": """
        SELECT e.id AS entry_id, e.event_id FROM ledger_entries e
        LEFT JOIN processed_events p ON p.ledger_entry_id = e.id
        WHERE e.type = 'EARN' AND e.event_id IS NOT NULL AND p.event_id IS NULL
          -- An order's points that waited (0011): its event says `pending`, the EARN came later.
          AND NOT EXISTS (SELECT 1 FROM processed_events q
                          WHERE q.event_id = e.event_id AND q.outcome = 'pending')""",
    # A REFUND gives back one REDEEM of its own account, exactly, and at most once.
    "refund_matches_redeem": """
        SELECT f.account_id, f.id AS entry_id, f.amount, f.refunds_entry_id,
               r.type AS redeem_type, r.account_id AS redeem_account_id, r.amount AS redeem_amount
        FROM ledger_entries f LEFT JOIN ledger_entries r ON r.id = f.refunds_entry_id
        WHERE f.type = 'REFUND' AND (r.id IS NULL OR r.type <> 'REDEEM'
              OR r.account_id <> f.account_id OR r.amount <> -f.amount)""",
    "one_refund_per_redeem": """
        SELECT refunds_entry_id AS redeem_entry_id, count(*) AS refunds FROM ledger_entries
        WHERE refunds_entry_id IS NOT NULL GROUP BY refunds_entry_id HAVING count(*) > 1""",
    # Redemptions and REDEEM entries, one to one; a refunded one names its REFUND.
    "redemption_matches_entry": """
        SELECT r.account_id, r.id AS redemption_id, r.points, e.type, e.amount
        FROM redemptions r LEFT JOIN ledger_entries e ON e.id = r.redeem_entry_id
        WHERE e.id IS NULL OR e.type <> 'REDEEM' OR e.account_id <> r.account_id
           OR e.amount <> -r.points""",
    "redeem_has_redemption": """
        SELECT e.account_id, e.id AS entry_id FROM ledger_entries e
        LEFT JOIN redemptions r ON r.redeem_entry_id = e.id
        WHERE e.type = 'REDEEM' AND r.id IS NULL""",
    "redemption_refund_matches": """
        SELECT r.account_id, r.id AS redemption_id, r.status, r.refund_entry_id,
               f.id AS refund_entry
        FROM redemptions r LEFT JOIN ledger_entries f
            ON f.refunds_entry_id = r.redeem_entry_id AND f.type = 'REFUND'
        WHERE (r.status = 'REFUNDED') <> (f.id IS NOT NULL)
           OR r.refund_entry_id IS DISTINCT FROM f.id""",
    "account_has_contact": """
        SELECT a.id AS account_id, a.contact_id FROM accounts a
        LEFT JOIN contacts c ON c.contact_id = a.contact_id WHERE c.contact_id IS NULL""",
}


#: Issue 10, events side: refunds (REVERSE entries, order_refunds) and activities.
LIFECYCLE_EVENT_CHECKS = {
    "reversed_equals_ledger": """
        SELECT a.id AS account_id, a.reversed, COALESCE(s.reversed, 0) AS ledger_reversed
        FROM accounts a LEFT JOIN (
            SELECT account_id, -sum(amount) AS reversed FROM ledger_entries
            WHERE type = 'REVERSE' GROUP BY account_id
        ) s ON s.account_id = a.id
        WHERE a.reversed <> COALESCE(s.reversed, 0)""",
    "reverse_references_order_earn": """
        SELECT r.account_id, r.id AS entry_id, r.order_id, r.reverses_entry_id
        FROM ledger_entries r LEFT JOIN ledger_entries e ON e.id = r.reverses_entry_id
        WHERE r.type = 'REVERSE' AND (e.id IS NULL OR e.type <> 'EARN'
              OR e.account_id <> r.account_id OR e.order_id IS DISTINCT FROM r.order_id)""",
    "reversals_within_earned": """
        SELECT r.account_id, r.order_id, -sum(r.amount) AS taken, max(e.amount) AS earned
        FROM ledger_entries r JOIN ledger_entries e ON e.id = r.reverses_entry_id
        WHERE r.type = 'REVERSE' GROUP BY r.account_id, r.order_id
        HAVING -sum(r.amount) > max(e.amount)""",
    # Each refund row agrees with its REVERSE entry and its order's EARN, and the taken
    # points of an order's refunds never exceed floor(E * R / T) for their refunded money.
    "refund_matches_entry": """
        SELECT f.account_id, f.order_id, f.refund_id, f.taken, r.amount FROM order_refunds f
        LEFT JOIN ledger_entries r ON r.id = f.reverse_entry_id
        WHERE (f.reverse_entry_id IS NOT NULL AND (r.amount <> -f.taken
               OR r.account_id <> f.account_id OR r.order_id <> f.order_id
               OR r.refund_id <> f.refund_id OR r.event_id <> f.event_id
               OR r.reverses_entry_id IS DISTINCT FROM f.earn_entry_id))
           OR f.due <> f.taken + f.shortfall + f.cancelled""",
    "reverse_has_refund": """
        SELECT r.account_id, r.id AS entry_id, r.refund_id FROM ledger_entries r
        LEFT JOIN order_refunds f ON f.reverse_entry_id = r.id
        WHERE r.type = 'REVERSE' AND f.reverse_entry_id IS NULL""",
    # Per order: what it earned is its EARN plus what refunds cancelled while it was pending
    # (0011), and what its refunds had is what they took plus what they cancelled.
    "refunds_follow_arithmetic": """
        SELECT o.account_id, o.order_id, o.taken, o.earned, o.order_total, o.refunded
        FROM (SELECT f.account_id, f.order_id, sum(f.taken + f.cancelled) AS taken,
                     COALESCE(max(e.amount), 0) + sum(f.cancelled) AS earned,
                     COALESCE(max(e.order_total), max(l.order_total)) AS order_total,
                     sum(f.amount) AS refunded
              FROM order_refunds f
              LEFT JOIN ledger_entries e ON e.account_id = f.account_id
                   AND e.order_id = f.order_id AND e.type = 'EARN' AND e.order_id IS NOT NULL
              LEFT JOIN point_lots l ON l.account_id = f.account_id AND l.order_id = f.order_id
                   AND l.order_id IS NOT NULL
              WHERE e.id IS NOT NULL OR l.id IS NOT NULL
              GROUP BY f.account_id, f.order_id) o
        WHERE o.taken > CASE WHEN o.order_total IS NULL OR o.order_total <= o.refunded
            THEN o.earned ELSE LEAST(o.earned, div(o.earned * o.refunded, o.order_total)) END""",
    "refund_event_recorded": """
        SELECT p.event_id, p.outcome, p.points, f.taken FROM processed_events p
        LEFT JOIN order_refunds f ON f.event_id = p.event_id
        WHERE p.event_type = 'order.refunded' AND p.outcome IN ('reversed', 'refund_recorded')
          AND (f.event_id IS NULL OR f.taken <> p.points
               OR f.reverse_entry_id IS DISTINCT FROM p.ledger_entry_id)""",
    "activity_earns_once_per_reference": """
        SELECT account_id, activity, reference_id, count(*) AS earns FROM ledger_entries
        WHERE type = 'EARN' AND reference_id IS NOT NULL
        GROUP BY account_id, activity, reference_id HAVING count(*) > 1""",
    "activity_follows_rule": """
        SELECT e.account_id, e.id AS entry_id, e.activity, r.activity AS rule_activity
        FROM ledger_entries e
        JOIN earn_rule_revisions r ON r.rule_id = e.rule_id AND r.revision = e.rule_revision
        WHERE e.type = 'EARN' AND e.event_type = 'activity'
          AND e.activity IS DISTINCT FROM r.activity""",
}
CHECKS.update(LIFECYCLE_EVENT_CHECKS)

#: Point lots (migration 0011): what the available lots hold is the balance, and no lot
#: holds less than nothing or more than it was given.
LOT_CHECKS = {
    "lots_equal_balance": """
        SELECT a.id AS account_id, a.balance, COALESCE(s.held, 0) AS lots_remaining
        FROM accounts a LEFT JOIN (
            SELECT account_id, sum(remaining) AS held FROM point_lots
            WHERE status = 'available' GROUP BY account_id
        ) s ON s.account_id = a.id
        WHERE a.balance <> COALESCE(s.held, 0)""",
    # What the database keeps per account (`lot_totals`, 0013, which the COMMIT check
    # reads) is what the lots themselves hold.
    "lot_totals_equal_lots": """
        SELECT COALESCE(t.account_id, s.account_id) AS account_id,
               t.available, t.pending, s.available AS lots_available,
               s.pending AS lots_pending
        FROM lot_totals t FULL JOIN (
            SELECT account_id,
                   COALESCE(sum(remaining) FILTER (WHERE status = 'available'), 0) AS available,
                   COALESCE(sum(remaining) FILTER (WHERE status = 'pending'), 0) AS pending
            FROM point_lots GROUP BY account_id
        ) s ON s.account_id = t.account_id
        WHERE (COALESCE(t.available, 0), COALESCE(t.pending, 0))
              IS DISTINCT FROM (COALESCE(s.available, 0), COALESCE(s.pending, 0))""",
    "lot_remaining_in_range": """
        SELECT id AS lot_id, account_id, amount, remaining FROM point_lots
        WHERE remaining < 0 OR remaining > amount""",
}
CHECKS.update(LOT_CHECKS)
