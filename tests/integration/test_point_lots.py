"""Point lots: every credit a lot, every debit uses the oldest up; the database keeps what
the available lots hold equal to the balance, whoever writes."""

from __future__ import annotations

import psycopg

from loyalty.ledger import Ledger
from tests.integration.test_invariants_sql import denied, refused
from tests.integration.test_ledger import adjust, order, signup
from tests.integration.test_redemptions import redeem
from tests.integration.test_redemptions import refund as refund_redemption
from tests.integration.test_refunds_activities import refund as refund_order


def lots(raw: psycopg.Connection, contact: str) -> list[tuple[str, int, int]]:
    rows = raw.execute(
        "SELECT COALESCE(e.type, 'OPENING'), l.amount, l.remaining FROM point_lots l"
        " JOIN accounts a ON a.id = l.account_id LEFT JOIN ledger_entries e ON e.id = l.entry_id"
        " WHERE a.contact_id = %s ORDER BY l.available_at, l.id", (contact,)).fetchall()
    raw.rollback()
    return [tuple(r) for r in rows]


def test_worked_example(ledger: Ledger, raw: psycopg.Connection) -> None:
    """Signup 100, orders of 50 and 30; redeem 120 (the signup's lot and 20 of the first
    order's); the first order refunded takes its 50 back (30 left in its lot, then 20 of
    the next); -5 by hand; the redemption refunded comes back as a new lot."""
    ledger.apply_signup(signup("c1"))
    ledger.apply_order(order("c1", "A", "50"))
    ledger.apply_order(order("c1", "B", "30"))
    assert lots(raw, "c1") == [("EARN", 100, 100), ("EARN", 50, 50), ("EARN", 30, 30)]
    spent = ledger.redeem_points(redeem("c1", "r-1", amount=120))
    assert lots(raw, "c1") == [("EARN", 100, 0), ("EARN", 50, 30), ("EARN", 30, 30)]
    ledger.apply_refund(refund_order("c1", "A", "f-1", "50"))
    assert lots(raw, "c1") == [("EARN", 100, 0), ("EARN", 50, 0), ("EARN", 30, 10)]
    ledger.adjust_points(adjust("c1", "a-1", amount=-5))
    ledger.refund_transaction(refund_redemption(spent["transaction_id"], "rf-1"))
    assert lots(raw, "c1") == [("EARN", 100, 0), ("EARN", 50, 0), ("EARN", 30, 5),
                               ("REFUND", 120, 120)]
    assert ledger.get_account(contact_id="c1")["points"]["balance"] == 125
    assert ledger.verify()["ok"]


def test_batch_of_many_accounts(ledger: Ledger, raw: psycopg.Connection) -> None:
    """One batch, one INSERT of entries: each account's lots, set-based."""
    events = [signup(f"c{i}") for i in range(20)] + [order(f"c{i}", f"o{i}", str(i + 1))
                                                      for i in range(20)]
    ledger.apply_events(events)
    assert lots(raw, "c7") == [("EARN", 100, 100), ("EARN", 8, 8)]
    assert ledger.verify()["ok"]


def test_lots_cannot_disagree_with_the_balance(ledger: Ledger, raw: psycopg.Connection,
                                               raw_owner: psycopg.Connection) -> None:
    ledger.apply_signup(signup("c1"))
    ledger.apply_order(order("c1", "A", "10"))
    # The application role may only add lots and change what they hold (an order's
    # pending points and what a refund cancels of them); the balance check still holds it.
    assert "permission denied" in denied(raw, "UPDATE point_lots SET amount = 1")
    assert "permission denied" in denied(raw, "UPDATE point_lots SET status = 'pending'")
    assert "permission denied" in denied(raw, "DELETE FROM point_lots")
    assert refused(raw, "UPDATE point_lots SET remaining = 0") == "point_lots_match_balance"
    # The owner can, and PostgreSQL still refuses what does not add up, by name.
    assert refused(raw_owner, "UPDATE point_lots SET remaining = remaining - 1"
                              " WHERE amount = 10") == "point_lots_match_balance"
    assert refused(raw_owner, "DELETE FROM point_lots WHERE amount = 10") \
        == "point_lots_match_balance"
    assert refused(raw_owner, "UPDATE point_lots SET remaining = amount + 1") \
        == "ck_point_lots_remaining_range"
    assert refused(raw_owner, "UPDATE point_lots SET remaining = -1") \
        == "ck_point_lots_remaining_range"
    assert refused(raw_owner, "INSERT INTO point_lots (account_id, amount, remaining,"
                              " available_at) SELECT id, 5, 5, now() FROM accounts") \
        == "point_lots_match_balance"
