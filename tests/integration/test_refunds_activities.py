"""Worked examples of refunds (REVERSE) and activities against a real PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from loyalty.errors import (
    AccountNotFound,
    CurrencyMismatch,
    IdempotencyConflict,
    NoActiveRule,
    OrderNotFound,
    RuleError,
)
from loyalty.ledger import Ledger
from schemas import AdjustPointsRequest
from schemas.events import ActivityEvent, OrderRefundedEvent
from tests.integration.test_ledger import TS, order, signup


def refund(contact: str, order_id: str, refund_id: str, amount: str, currency: str = "USD",
           event_id: str | None = None) -> OrderRefundedEvent:
    return OrderRefundedEvent(event_id=event_id or f"refund-{order_id}-{refund_id}",
                              contact_id=contact, order_id=order_id, refund_id=refund_id,
                              amount=amount, currency=currency, occurred_at=TS)


def activity(contact: str, name: str, reference_id: str | None = None,
             event_id: str | None = None) -> ActivityEvent:
    fields: dict[str, Any] = {"reference_id": reference_id} if reference_id else {}
    return ActivityEvent(event_id=event_id or f"act-{contact}-{name}-{reference_id}",
                         contact_id=contact, activity=name, occurred_at=TS, **fields)


def points(ledger: Ledger, contact: str = "c1") -> dict[str, int]:
    return ledger.get_account(contact_id=contact)["points"]


@pytest.fixture
def shop(ledger: Ledger) -> Ledger:
    """c1 signed up (100) and earned 49 on order A of 49.90 USD: balance 149."""
    ledger.apply_signup(signup("c1"))
    ledger.apply_order(order("c1", "A", "49.90"))
    return ledger


def test_partial_then_full_refund_worked_example(shop: Ledger) -> None:
    first = shop.apply_refund(refund("c1", "A", "r1", "10.00"))
    assert (first.outcome, first.points) == ("reversed", 9)  # floor(49 * 10 / 49.90)
    assert first.detail == {"order_id": "A", "refund_id": "r1", "due": 9, "taken": 9,
                            "shortfall": 0}
    second = shop.apply_refund(refund("c1", "A", "r2", "39.90"))
    assert (second.outcome, second.points) == ("reversed", 40)  # all of 49 in all
    assert points(shop) == {"balance": 100, "earned": 149, "adjusted": 0, "redeemed": 0,
                            "expired": 0, "reversed": 49, "pending": 0}
    entries = shop.list_transactions(contact_id="c1", type_="REVERSE")["items"]
    earn = shop.list_transactions(contact_id="c1", type_="EARN")["items"][0]
    assert [(e["type"], e["amount"]) for e in entries] == [("REVERSE", -40), ("REVERSE", -9)]
    assert entries[1]["source"] == {"order_id": "A", "refund_id": "r1",
                                    "reverses_transaction_id": earn["id"], "due": 9,
                                    "taken": 9, "shortfall": 0}
    # More refunds than the total take nothing more.
    third = shop.apply_refund(refund("c1", "A", "r3", "5"))
    assert (third.outcome, third.points) == ("refund_recorded", 0)
    assert shop.verify()["ok"], shop.verify()["violations"]


def test_a_refund_sent_twice_applies_once(shop: Ledger) -> None:
    shop.apply_refund(refund("c1", "A", "r1", "10"))
    again = shop.apply_refund(refund("c1", "A", "r1", "10"))
    assert again.duplicate and again.outcome == "reversed"
    # The same refund_id under another event_id: recorded, takes nothing.
    other = shop.apply_refund(refund("c1", "A", "r1", "10.00", event_id="another"))
    assert (other.outcome, other.points, other.duplicate) == ("duplicate_refund", 0, False)
    with pytest.raises(IdempotencyConflict, match="already applied with amount 10 USD"):
        shop.apply_refund(refund("c1", "A", "r1", "11", event_id="third"))
    with pytest.raises(IdempotencyConflict):
        shop.apply_refund(refund("c1", "A", "r9", "1", event_id="refund-A-r1"))
    assert points(shop)["reversed"] == 9
    assert shop.verify()["ok"]


def test_refund_errors_write_nothing(shop: Ledger) -> None:
    with pytest.raises(CurrencyMismatch, match="in EUR; order 'A' was in USD"):
        shop.apply_refund(refund("c1", "A", "r1", "10", currency="EUR"))
    with pytest.raises(OrderNotFound):
        shop.apply_refund(refund("c1", "later", "r1", "10"))
    with pytest.raises(AccountNotFound):
        shop.apply_refund(refund("ghost", "A", "r1", "10"))
    assert points(shop)["reversed"] == 0
    assert shop.list_events(outcome="reversed")["items"] == []


def test_a_refund_before_its_order_applies_once_the_order_has(shop: Ledger) -> None:
    early = refund("c1", "B", "r1", "50")
    with pytest.raises(OrderNotFound):
        shop.apply_refund(early)
    shop.apply_order(order("c1", "B", "100"))
    assert shop.apply_refund(early).points == 50
    assert shop.apply_refund(early).duplicate
    assert points(shop)["balance"] == 149 + 100 - 50


def test_an_order_that_earned_nothing_records_its_refund(shop: Ledger) -> None:
    shop.apply_order(order("c1", "Z", "0.99"))  # floors to 0 points
    result = shop.apply_refund(refund("c1", "Z", "r1", "0.99"))
    assert (result.outcome, result.points) == ("refund_recorded", 0)
    assert result.detail == {"order_id": "Z", "refund_id": "r1", "due": 0, "taken": 0,
                             "shortfall": 0}
    with pytest.raises(CurrencyMismatch):  # its currency is known all the same
        shop.apply_refund(refund("c1", "Z", "r2", "0.99", currency="EUR"))
    assert shop.verify()["ok"]


def test_the_balance_never_goes_below_zero_and_the_rest_is_a_shortfall(shop: Ledger) -> None:
    shop.adjust_points(AdjustPointsRequest(request_id="spend", contact_id="c1", amount=-130,
                                           description="spent", actor="alice"))
    result = shop.apply_refund(refund("c1", "A", "r1", "49.90"))
    assert result.detail == {"order_id": "A", "refund_id": "r1", "due": 49, "taken": 19,
                             "shortfall": 30}
    assert points(shop)["balance"] == 0
    assert shop.verify()["ok"]


def test_activities_earn_by_their_rule_once_per_reference(ledger: Ledger) -> None:
    ledger.apply_signup(signup("c1"))
    with pytest.raises(NoActiveRule, match="no active activity rule for 'review'"):
        ledger.apply_activity(activity("c1", "review", "p-1"))
    rule = ledger.create_rule(name="Reviews", trigger="activity", kind="fixed", points=25,
                              money_amount=None, currency=None, activity="review")
    assert rule["activity"] == "review"
    ledger.create_rule(name="Shares", trigger="activity", kind="fixed", points=5,
                       money_amount=None, currency=None, activity="share")
    with pytest.raises(RuleError, match="another ACTIVE rule"):
        ledger.create_rule(name="Reviews 2", trigger="activity", kind="fixed", points=1,
                           money_amount=None, currency=None, activity="review")
    first = ledger.apply_activity(activity("c1", "review", "p-1"))
    assert (first.outcome, first.points) == ("earned", 25)
    repeat = ledger.apply_activity(activity("c1", "review", "p-1", event_id="other"))
    assert (repeat.outcome, repeat.points) == ("duplicate_activity", 0)
    ledger.apply_activity(activity("c1", "review", "p-2"))
    ledger.apply_activity(activity("c1", "share", event_id="s1"))
    ledger.apply_activity(activity("c1", "share", event_id="s2"))  # no reference: each earns
    assert points(ledger)["earned"] == 100 + 25 + 25 + 5 + 5
    entry = ledger.list_transactions(contact_id="c1")["items"][-2]
    assert entry["source"]["activity"] == "review"
    assert entry["source"]["reference_id"] == "p-1"
    with pytest.raises(AccountNotFound):
        ledger.apply_activity(activity("ghost", "review", "p-1"))
    assert ledger.verify()["ok"]


def test_totals_carry_reversed(shop: Ledger) -> None:
    shop.apply_refund(refund("c1", "A", "r1", "49.90"))
    assert shop.totals()["points"] == {"balance": 100, "earned": 149, "adjusted": 0,
                                       "redeemed": 0, "expired": 0, "reversed": 49}
