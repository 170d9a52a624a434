"""Pending points: an order's points wait `pending_days`, cannot be spent, become available
on time with their EARN, and a refund while they wait cancels them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from loyalty.ledger import Ledger
from schemas.events import OrderCompletedEvent
from tests.integration.test_ledger import signup
from tests.integration.test_point_lots import lots
from tests.integration.test_redemptions import redeem
from tests.integration.test_refunds_activities import refund

NOW = datetime.now(UTC)


def recent_order(contact: str, order_id: str, total: str, days_ago: int = 1,
                 event_id: str | None = None) -> OrderCompletedEvent:
    return OrderCompletedEvent(event_id=event_id or f"order-{order_id}", contact_id=contact,
                               order_id=order_id, total=total, currency="USD",
                               occurred_at=(NOW - timedelta(days=days_ago)).isoformat())


@pytest.fixture
def pending_ledger(ledger: Ledger) -> Ledger:
    ledger.set_program(pending_days=14)
    ledger.apply_signup(signup("c1"))
    return ledger


def test_pending_then_available_on_time(pending_ledger: Ledger, raw: psycopg.Connection) -> None:
    ledger = pending_ledger
    first = ledger.apply_order(recent_order("c1", "A", "50"))
    assert (first.outcome, first.points, first.ledger_entry_id) == ("pending", 50, None)
    # Old enough already: earned at once.
    assert ledger.apply_order(recent_order("c1", "OLD", "7", days_ago=30)).outcome == "earned"
    # The same order again (another event id) earns nothing more while it waits.
    again = ledger.apply_order(recent_order("c1", "A", "50", event_id="order-A-again"))
    assert again.outcome == "duplicate_order"
    account = ledger.get_account(contact_id="c1")
    assert (account["points"]["balance"], account["points"]["pending"]) == (107, 50)
    assert [p["points"] for p in ledger.list_pending(contact_id="c1")["items"]] == [50]
    # Not spendable.
    assert ledger.redeem_points(redeem("c1", "r-1", amount=108))["reason"] == \
        "insufficient_balance"
    # Not due yet, then due: one EARN, once.
    assert ledger.activate_points(NOW + timedelta(days=5))["entries"] == 0
    done = ledger.activate_points(NOW + timedelta(days=14))
    assert (done["accounts"], done["entries"], done["points"]) == (1, 1, 50)
    assert ledger.activate_points(NOW + timedelta(days=14))["entries"] == 0
    account = ledger.get_account(contact_id="c1")
    assert (account["points"]["balance"], account["points"]["earned"],
            account["points"]["pending"]) == (157, 157, 0)
    earn = [e for e in ledger.list_transactions(contact_id="c1", type_="EARN")["items"]
            if e["source"]["order_id"] == "A"]
    assert earn[0]["amount"] == 50 and earn[0]["source"]["event_id"] == "order-A"
    assert ("EARN", 50, 50) in lots(raw, "c1")
    assert ledger.verify()["violations"] == []


def test_refund_while_pending_cancels(pending_ledger: Ledger) -> None:
    ledger = pending_ledger
    ledger.apply_order(recent_order("c1", "A", "50"))
    half = ledger.apply_refund(refund("c1", "A", "f-1", "20"))
    assert half.outcome == "refund_recorded"
    assert half.detail == {"order_id": "A", "refund_id": "f-1", "due": 20, "taken": 0,
                           "shortfall": 0, "cancelled": 20}
    account = ledger.get_account(contact_id="c1")
    assert (account["points"]["balance"], account["points"]["pending"],
            account["points"]["reversed"]) == (100, 30, 0)
    ledger.activate_points(NOW + timedelta(days=14))
    account = ledger.get_account(contact_id="c1")
    assert (account["points"]["balance"], account["points"]["pending"]) == (130, 0)
    # The rest refunded after it became available: reversed from the balance as before.
    rest = ledger.apply_refund(refund("c1", "A", "f-2", "30"))
    assert (rest.outcome, rest.points) == ("reversed", 30)
    assert ledger.get_account(contact_id="c1")["points"]["balance"] == 100
    assert ledger.verify()["violations"] == []


def test_refund_in_full_while_pending_leaves_nothing(pending_ledger: Ledger) -> None:
    ledger = pending_ledger
    ledger.apply_order(recent_order("c1", "A", "50"))
    ledger.apply_refund(refund("c1", "A", "f-1", "50"))
    assert ledger.list_pending(contact_id="c1")["items"] == []
    assert ledger.activate_points(NOW + timedelta(days=30))["entries"] == 0
    assert ledger.get_account(contact_id="c1")["points"]["balance"] == 100
    assert ledger.verify()["violations"] == []
