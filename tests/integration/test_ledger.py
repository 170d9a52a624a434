"""Worked examples of the ledger against a real PostgreSQL, one database per test."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from loyalty.errors import (
    AccountNotFound,
    ContactConflict,
    IdempotencyConflict,
    NoActiveRule,
    RuleError,
)
from loyalty.ledger import Ledger
from schemas import AdjustPointsRequest, OrderCompletedEvent, SignupEvent

TS = "2026-01-31T12:00:00Z"


def signup(contact: str, event_id: str | None = None, **extra: Any) -> SignupEvent:
    return SignupEvent(event_id=event_id or f"signup-{contact}", contact_id=contact,
                       occurred_at=extra.pop("occurred_at", TS), **extra)


def order(contact: str, order_id: str, total: str, event_id: str | None = None,
          currency: str = "USD") -> OrderCompletedEvent:
    return OrderCompletedEvent(event_id=event_id or f"order-{order_id}", contact_id=contact,
                               order_id=order_id, total=total, currency=currency,
                               occurred_at=TS)


def adjust(contact: str, request_id: str, **fields: Any) -> AdjustPointsRequest:
    return AdjustPointsRequest(request_id=request_id, contact_id=contact,
                               description=fields.pop("description", "goodwill"),
                               actor=fields.pop("actor", "alice"), **fields)


def test_signup_then_orders_worked_example(ledger: Ledger) -> None:
    first = ledger.apply_signup(signup("c1", member_id="m1", email="a@example.com"))
    assert (first.outcome, first.points) == ("earned", 100)
    ledger.apply_order(order("c1", "A", "49.90"))
    ledger.apply_order(order("c1", "B", "0.99"))  # floors to 0 points: no ledger entry
    account = ledger.get_account(contact_id="c1")
    assert account["points"] == {"balance": 149, "earned": 149, "adjusted": 0, "redeemed": 0,
                                 "expired": 0, "reversed": 0, "pending": 0}
    assert account["revision"] == 3
    assert account["member_id"] == "m1"
    assert account["id"] not in ("c1", "m1")
    entries = ledger.list_transactions(contact_id="c1")["items"]
    assert [(e["type"], e["amount"], e["balance_after"]) for e in entries] == [
        ("EARN", 49, 149), ("EARN", 100, 100)]
    assert entries[0]["source"] == {"event_type": "order.completed", "event_id": "order-A",
                                    "order_id": "A", "rule_id": 2, "rule_revision": 1}
    assert ledger.verify()["ok"]


def test_redelivered_event_changes_nothing(ledger: Ledger) -> None:
    ledger.apply_signup(signup("c1"))
    first = ledger.apply_order(order("c1", "A", "10"))
    again = ledger.apply_order(order("c1", "A", "10.00"))
    assert again.duplicate and again.ledger_entry_id == first.ledger_entry_id
    assert ledger.get_account(contact_id="c1")["points"]["balance"] == 110


def test_order_resent_under_new_event_id_earns_once(ledger: Ledger) -> None:
    ledger.apply_signup(signup("c1"))
    ledger.apply_order(order("c1", "A", "10", event_id="e1"))
    resent = ledger.apply_order(order("c1", "A", "10", event_id="e2"))
    assert (resent.outcome, resent.points, resent.duplicate) == ("duplicate_order", 0, False)
    assert ledger.get_account(contact_id="c1")["points"]["earned"] == 110


def test_same_event_id_with_other_payload_is_a_conflict(ledger: Ledger) -> None:
    ledger.apply_signup(signup("c1"))
    ledger.apply_order(order("c1", "A", "10", event_id="e1"))
    with pytest.raises(IdempotencyConflict):
        ledger.apply_order(order("c1", "A", "11", event_id="e1"))
    with pytest.raises(IdempotencyConflict):
        ledger.apply_signup(signup("c1", event_id="e1"))
    assert ledger.get_account(contact_id="c1")["points"]["balance"] == 110


def test_signup_earns_once_per_contact(ledger: Ledger) -> None:
    ledger.apply_signup(signup("c1", event_id="s1"))
    second = ledger.apply_signup(signup("c1", event_id="s2", name="New Name"))
    assert second.outcome == "already_signed_up"
    account = ledger.get_account(contact_id="c1")
    assert (account["points"]["balance"], account["revision"]) == (100, 2)


def test_old_signup_redelivered_late_does_not_overwrite_newer_profile(ledger: Ledger) -> None:
    ledger.apply_signup(signup("c1", event_id="s2", member_id="m-new",
                               occurred_at="2026-02-01T00:00:00Z"))
    ledger.apply_signup(signup("c1", event_id="s1", member_id="m-old",
                               occurred_at="2026-01-01T00:00:00Z"))
    assert ledger.get_account(contact_id="c1")["member_id"] == "m-new"


def test_member_id_belongs_to_one_contact(ledger: Ledger) -> None:
    ledger.apply_signup(signup("c1", member_id="m1"))
    with pytest.raises(ContactConflict):
        ledger.apply_signup(signup("c2", member_id="m1"))
    with pytest.raises(AccountNotFound):
        ledger.get_account(contact_id="c2")


def test_order_for_unknown_contact_writes_nothing(ledger: Ledger) -> None:
    with pytest.raises(AccountNotFound):
        ledger.apply_order(order("ghost", "A", "10"))
    assert ledger.totals() == {"points": dict.fromkeys(
        ("balance", "earned", "adjusted", "redeemed", "expired", "reversed"), 0), "accounts": 0,
        "tiers": []}


def test_no_active_rule_then_resume(ledger: Ledger) -> None:
    ledger.apply_signup(signup("c1"))
    ledger.update_rule(2, status="PAUSED")
    with pytest.raises(NoActiveRule):
        ledger.apply_order(order("c1", "A", "10"))
    ledger.update_rule(2, status="ACTIVE")
    assert ledger.apply_order(order("c1", "A", "10")).points == 10


def test_paused_signup_rule_still_creates_the_account(ledger: Ledger) -> None:
    ledger.update_rule(1, status="PAUSED")
    outcome = ledger.apply_signup(signup("c1"))
    assert (outcome.outcome, outcome.points) == ("no_rule", 0)
    assert ledger.get_account(contact_id="c1")["points"]["balance"] == 0


def test_currency_rule_and_rule_revision_recorded(ledger: Ledger) -> None:
    ledger.apply_signup(signup("c1"))
    eur = ledger.create_rule(name="Double EUR", trigger="order.completed", kind="conversion",
                             points=2, money_amount=Decimal("1"), currency="EUR")
    ledger.update_rule(eur["id"], points=3)
    ledger.apply_order(order("c1", "A", "10", currency="EUR"))
    ledger.apply_order(order("c1", "B", "10", currency="USD"))
    items = ledger.list_transactions(contact_id="c1", type_="EARN")["items"]
    by_order = {e["source"]["order_id"]: e for e in items}
    assert by_order["A"]["amount"] == 30
    assert (by_order["A"]["source"]["rule_id"], by_order["A"]["source"]["rule_revision"]) == (
        eur["id"], 2)
    assert by_order["B"]["amount"] == 10


def test_two_active_rules_for_one_trigger_are_refused(ledger: Ledger) -> None:
    with pytest.raises(RuleError, match="pause it first"):
        ledger.create_rule(name="Another", trigger="order.completed", kind="conversion",
                           points=5, money_amount=Decimal("1"), currency=None)


def test_rule_revision_guard(ledger: Ledger) -> None:
    with pytest.raises(RuleError, match="revision"):
        ledger.update_rule(1, expected_revision=7, points=5)
    assert ledger.update_rule(1, expected_revision=1, points=5)["revision"] == 2


def test_adjust_amount_and_set_balance(ledger: Ledger) -> None:
    ledger.apply_signup(signup("c1"))
    added = ledger.adjust_points(adjust("c1", "r1", amount=-30))
    assert added["status"] == "applied"
    assert added["account"]["points"]["balance"] == 70
    set_to = ledger.adjust_points(adjust("c1", "r2", balance=500, revision=3))
    assert set_to["account"]["points"] == {"balance": 500, "earned": 100, "adjusted": 400,
                                           "redeemed": 0, "expired": 0, "reversed": 0}
    entry = ledger.list_transactions(contact_id="c1", type_="ADJUST")["items"][0]
    assert entry["id"] == set_to["transaction_id"]
    assert entry["source"] == {"actor": "alice", "balance_before": 70, "balance_after": 500}
    assert ledger.verify()["ok"]


def test_adjust_below_zero_is_rejected_and_changes_nothing(ledger: Ledger) -> None:
    ledger.apply_signup(signup("c1"))
    before = ledger.get_account(contact_id="c1")
    result = ledger.adjust_points(adjust("c1", "r1", amount=-101))
    assert (result["status"], result["reason"]) == ("rejected", "balance_below_zero")
    assert ledger.get_account(contact_id="c1") == before
    assert ledger.list_transactions(contact_id="c1", type_="ADJUST")["items"] == []


def test_adjust_request_id_is_idempotent(ledger: Ledger) -> None:
    ledger.apply_signup(signup("c1"))
    first = ledger.adjust_points(adjust("c1", "r1", amount=5))
    again = ledger.adjust_points(adjust("c1", "r1", amount=5))
    assert again == first
    assert ledger.get_account(contact_id="c1")["points"]["balance"] == 105
    with pytest.raises(IdempotencyConflict):
        ledger.adjust_points(adjust("c1", "r1", amount=6))


def test_adjust_stale_revision_and_unknown_account(ledger: Ledger) -> None:
    ledger.apply_signup(signup("c1"))
    stale = ledger.adjust_points(adjust("c1", "r1", amount=5, revision=1))
    assert stale["reason"] == "revision_mismatch"
    missing = ledger.adjust_points(adjust("ghost", "r2", amount=5))
    assert (missing["status"], missing["reason"], missing["account"]) == (
        "rejected", "account_not_found", None)


def test_paging_accounts_and_transactions(ledger: Ledger) -> None:
    for i in range(7):
        ledger.apply_signup(signup(f"c{i}"))
    seen, cursor = [], None
    while True:
        page = ledger.list_accounts(3, cursor)
        seen += [a["contact_id"] for a in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == [f"c{i}" for i in range(7)]
    for i in range(5):
        ledger.apply_order(order("c0", f"o{i}", "1"))
    page1 = ledger.list_transactions(contact_id="c0", limit=4)
    page2 = ledger.list_transactions(contact_id="c0", limit=4, cursor=page1["next_cursor"])
    assert len(page1["items"]) == 4 and len(page2["items"]) == 2
    assert page2["next_cursor"] is None


def test_totals(ledger: Ledger) -> None:
    ledger.apply_signup(signup("c1"))
    ledger.apply_signup(signup("c2"))
    ledger.adjust_points(adjust("c2", "r", amount=-40))
    assert ledger.totals() == {"points": {"balance": 160, "earned": 200, "adjusted": -40,
                                          "redeemed": 0, "expired": 0, "reversed": 0}, "accounts": 2,
                              "tiers": []}


def test_dead_letter_redelivery_counts_attempts(ledger: Ledger) -> None:
    first = ledger.add_dead_letter(task_name="t", message_id="m1", payload="[]", headers={},
                                   reason="invalid_payload", error_detail="x")
    again = ledger.add_dead_letter(task_name="t", message_id="m1", payload="[]", headers={},
                                   reason="invalid_payload", error_detail="x")
    assert first == again
    letters = ledger.list_dead_letters()["items"]
    assert [(d["id"], d["attempts"]) for d in letters] == [(first, 2)]
    ledger.add_dead_letter(task_name="t", message_id=None, payload='"\\u0000"',
                           headers={}, reason="invalid_payload", error_detail="nul")
    assert ledger.list_dead_letters(reason="invalid_payload")["items"][1]["payload"] == '"\\u0000"'


def test_rule_update_that_changes_nothing_keeps_the_revision(ledger: Ledger) -> None:
    assert ledger.update_rule(1, status="ACTIVE")["revision"] == 1
    assert ledger.update_rule(1, points=100)["revision"] == 1
    assert ledger.update_rule(1, points=101)["revision"] == 2
