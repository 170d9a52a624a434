"""Worked examples of the point lifecycle's staff side: accounts opened by staff, staff
earns, rewards, redemptions and their refunds, against a real PostgreSQL."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest

from loyalty.errors import (
    ContactConflict,
    IdempotencyConflict,
    InvalidReward,
    RedemptionNotFound,
    RewardError,
    RewardNotFound,
)
from loyalty.ledger import Ledger
from schemas import (
    CreateAccountRequest,
    EarnPointsRequest,
    RedeemPointsRequest,
    RefundTransactionRequest,
)
from tests.integration.test_ledger import adjust, order, signup

CODE = re.compile(r"^[2-9A-HJKMNP-TV-Z]{4}(-[2-9A-HJKMNP-TV-Z]{4}){3}$")


def create(contact: str, request_id: str | None = None, **extra: Any) -> CreateAccountRequest:
    return CreateAccountRequest(request_id=request_id or f"create-{contact}", contact_id=contact,
                                **extra)


def earn(contact: str, request_id: str, amount: int, **extra: Any) -> EarnPointsRequest:
    return EarnPointsRequest(request_id=request_id, contact_id=contact, amount=amount,
                             activity=extra.pop("activity", "review"),
                             actor=extra.pop("actor", "support@shop"), **extra)


def redeem(contact: str, request_id: str, **extra: Any) -> RedeemPointsRequest:
    return RedeemPointsRequest(request_id=request_id, contact_id=contact,
                               actor=extra.pop("actor", "support@shop"), **extra)


def refund(transaction_id: str, request_id: str, **extra: Any) -> RefundTransactionRequest:
    return RefundTransactionRequest(request_id=request_id, transaction_id=transaction_id,
                                    actor=extra.pop("actor", "support@shop"), **extra)


@pytest.fixture
def reward(ledger: Ledger) -> dict[str, Any]:
    return ledger.create_reward(name="5 USD off", kind="discount_amount", value=Decimal("5.00"),
                                currency="USD", cost_in_points=40)


def test_the_lifecycle_worked_example(ledger: Ledger, reward: dict[str, Any]) -> None:
    """Alice's account is opened by staff; she earns for a review and an order, redeems two
    coupons, and support refunds one of them."""
    created = ledger.create_account(create("alice", member_id="m-alice"))
    assert created["status"] == "created"
    assert created["account"]["points"]["balance"] == 0
    earned = ledger.earn_points(earn("alice", "e-1", 70, activity="product review"))
    assert earned["status"] == "applied"
    ledger.apply_signup(signup("alice"))  # the signup bonus still applies, once
    ledger.apply_order(order("alice", "A", "30.00"))
    assert ledger.get_account(contact_id="alice")["points"]["balance"] == 200

    spent = ledger.redeem_points(redeem("alice", "r-1", reward_id=reward["id"], count=2,
                                        reference_id="cart-9"))
    assert spent["status"] == "applied"
    redemption = spent["redemption"]
    assert (redemption["reward_id"], redemption["points"], redemption["count"],
            redemption["status"], redemption["reference_id"]) == (reward["id"], 80, 2, "ISSUED",
                                                                   "cart-9")
    assert CODE.match(redemption["code"]), redemption["code"]
    assert redemption["transaction_id"] == spent["transaction_id"]
    assert spent["account"]["points"] == {"balance": 120, "earned": 200, "adjusted": 0,
                                          "redeemed": 80, "expired": 0, "reversed": 0}
    by_amount = ledger.redeem_points(redeem("alice", "r-2", amount=20))
    assert (by_amount["redemption"]["reward_id"], by_amount["redemption"]["points"]) == (None, 20)

    back = ledger.refund_transaction(refund(spent["transaction_id"], "f-1",
                                            description="coupon not used"))
    assert back["status"] == "applied"
    assert back["redemption"]["status"] == "REFUNDED"
    assert back["redemption"]["refund_transaction_id"] == back["transaction_id"]
    assert back["account"]["points"] == {"balance": 180, "earned": 200, "adjusted": 0,
                                         "redeemed": 20, "expired": 0, "reversed": 0}

    entries = ledger.list_transactions(contact_id="alice")["items"]
    assert [(e["type"], e["amount"], e["balance_after"]) for e in entries] == [
        ("REFUND", 80, 180), ("REDEEM", -20, 100), ("REDEEM", -80, 120), ("EARN", 30, 200),
        ("EARN", 100, 170), ("EARN", 70, 70)]
    assert entries[0]["source"] == {"actor": "support@shop",
                                    "refunds_transaction_id": spent["transaction_id"]}
    assert entries[-1]["source"] == {"activity": "product review", "actor": "support@shop"}
    assert entries[-1]["description"] == "product review"
    redeems = ledger.list_transactions(contact_id="alice", type_="REDEEM")["items"]
    assert [e["id"] for e in redeems] == [by_amount["transaction_id"], spent["transaction_id"]]
    assert ledger.get_redemption(code=redemption["code"].lower().replace("-", ""))["status"] \
        == "REFUNDED"
    assert ledger.get_redemption(redemption_id=redemption["id"])["code"] == redemption["code"]
    listed = ledger.list_redemptions(contact_id="alice", limit=1)
    assert [r["id"] for r in listed["items"]] == [by_amount["redemption"]["id"]]
    rest = ledger.list_redemptions(contact_id="alice", limit=5, cursor=listed["next_cursor"])
    assert [r["id"] for r in rest["items"]] == [redemption["id"]]
    assert rest["next_cursor"] is None
    assert ledger.totals()["points"]["redeemed"] == 20
    assert ledger.verify()["ok"], ledger.verify()


def test_create_account_for_an_existing_contact(ledger: Ledger) -> None:
    ledger.apply_signup(signup("bob", member_id="m-bob"))
    again = ledger.create_account(create("bob", member_id="m-other"))
    assert again["status"] == "existing"
    assert again["account"]["member_id"] == "m-bob"  # only signups change a profile
    with pytest.raises(ContactConflict):
        ledger.create_account(create("carol", member_id="m-bob"))
    assert ledger.totals()["accounts"] == 1  # the refused request changed nothing


@pytest.mark.parametrize(("setup", "request_", "reason"), [
    ("none", lambda r: redeem("ghost", "q", reward_id=r), "account_not_found"),
    ("none", lambda r: redeem("alice", "q", reward_id=999), "reward_not_found"),
    ("paused", lambda r: redeem("alice", "q", reward_id=r), "reward_paused"),
    ("none", lambda r: redeem("alice", "q", reward_id=r, revision=1), "revision_mismatch"),
    ("none", lambda r: redeem("alice", "q", reward_id=r, count=3), "insufficient_balance"),
    ("none", lambda r: redeem("alice", "q", amount=101), "insufficient_balance"),
])
def test_every_redemption_rejection_changes_nothing(ledger: Ledger, reward: dict[str, Any],
                                                    setup: str, request_: Any,
                                                    reason: str) -> None:
    ledger.apply_signup(signup("alice"))  # 100 points, revision 2
    if setup == "paused":
        ledger.update_reward(reward["id"], status="PAUSED")
    before = ledger.get_account(contact_id="alice")
    result = ledger.redeem_points(request_(reward["id"]))
    assert (result["status"], result["reason"]) == ("rejected", reason)
    assert ledger.get_account(contact_id="alice") == before
    assert ledger.list_transactions(contact_id="alice", type_="REDEEM")["items"] == []
    # A rejection is the request's answer: repeating it gets the same.
    assert ledger.redeem_points(request_(reward["id"])) == result


def test_redeem_exactly_the_balance(ledger: Ledger, reward: dict[str, Any]) -> None:
    ledger.apply_signup(signup("alice"))
    result = ledger.redeem_points(redeem("alice", "q", amount=100, revision=2))
    assert result["account"]["points"]["balance"] == 0
    assert ledger.verify()["ok"]


def test_refund_rejections(ledger: Ledger, reward: dict[str, Any]) -> None:
    ledger.apply_signup(signup("alice"))
    spent = ledger.redeem_points(redeem("alice", "r-1", reward_id=reward["id"]))
    earn_entry = ledger.list_transactions(contact_id="alice", type_="EARN")["items"][0]
    missing = ledger.refund_transaction(refund("00000000-0000-0000-0000-000000000000", "f-0"))
    assert (missing["reason"], missing["account"]) == ("transaction_not_found", None)
    assert ledger.refund_transaction(refund(earn_entry["id"], "f-1"))["reason"] == "not_refundable"
    first = ledger.refund_transaction(refund(spent["transaction_id"], "f-2"))
    assert first["status"] == "applied"
    again = ledger.refund_transaction(refund(spent["transaction_id"], "f-3"))
    assert again["reason"] == "already_refunded"
    refund_entry = first["transaction_id"]
    assert ledger.refund_transaction(refund(refund_entry, "f-4"))["reason"] == "not_refundable"
    # A refund that would take the balance above the maximum is refused.
    second = ledger.redeem_points(redeem("alice", "r-2", amount=50))
    ledger.adjust_points(adjust("alice", "a-1", balance=999_999_999))
    high = ledger.refund_transaction(refund(second["transaction_id"], "f-5"))
    assert high["reason"] == "balance_above_maximum"
    assert ledger.get_account(contact_id="alice")["points"]["balance"] == 999_999_999
    assert ledger.verify()["ok"]


def test_staff_earn_rejections_and_ceilings(ledger: Ledger) -> None:
    assert ledger.earn_points(earn("ghost", "e-0", 5))["reason"] == "account_not_found"
    ledger.apply_signup(signup("alice"))
    ledger.adjust_points(adjust("alice", "a-1", balance=999_999_990))
    assert ledger.earn_points(earn("alice", "e-1", 11))["reason"] == "balance_above_maximum"
    assert ledger.earn_points(earn("alice", "e-2", 9))["status"] == "applied"
    assert ledger.get_account(contact_id="alice")["points"]["earned"] == 109


def test_repeated_request_ids_return_the_first_result(ledger: Ledger,
                                                      reward: dict[str, Any]) -> None:
    first = ledger.create_account(create("alice", "same-create"))
    assert ledger.create_account(create("alice", "same-create")) == first
    with pytest.raises(IdempotencyConflict):
        ledger.create_account(create("bob", "same-create"))
    assert ledger.totals()["accounts"] == 1

    earned = ledger.earn_points(earn("alice", "e-1", 300))
    assert ledger.earn_points(earn("alice", "e-1", 300)) == earned
    with pytest.raises(IdempotencyConflict):
        ledger.earn_points(earn("alice", "e-1", 301))

    spent = ledger.redeem_points(redeem("alice", "r-1", reward_id=reward["id"]))
    assert ledger.redeem_points(redeem("alice", "r-1", reward_id=reward["id"])) == spent
    with pytest.raises(IdempotencyConflict):
        ledger.redeem_points(redeem("alice", "r-1", reward_id=reward["id"], count=2))

    back = ledger.refund_transaction(refund(spent["transaction_id"], "f-1"))
    assert ledger.refund_transaction(refund(spent["transaction_id"], "f-1")) == back
    with pytest.raises(IdempotencyConflict):
        ledger.refund_transaction(refund(spent["transaction_id"], "f-1", description="other"))
    # One request_id, one result, whatever the task.
    with pytest.raises(IdempotencyConflict, match=r"already used for loyalty\.accounts\.earn_points"):
        ledger.adjust_points(adjust("alice", "e-1", amount=5))
    account = ledger.get_account(contact_id="alice")
    assert account["points"] == {"balance": 300, "earned": 300, "adjusted": 0, "redeemed": 0,
                                 "expired": 0, "reversed": 0, "pending": 0}
    assert account["revision"] == 4
    assert ledger.verify()["ok"]


def test_rewards_catalogue(ledger: Ledger) -> None:
    made = ledger.create_reward(name="Free shipping", kind="free_shipping", value=None,
                                currency=None, cost_in_points=150)
    assert made == {"id": made["id"], "name": "Free shipping", "kind": "free_shipping",
                    "value": None, "currency": None, "cost_in_points": 150, "tier_costs": {},
                    "status": "ACTIVE", "revision": 1}
    changed = ledger.update_reward(made["id"], expected_revision=1, cost_in_points=120)
    assert (changed["cost_in_points"], changed["revision"]) == (120, 2)
    with pytest.raises(RewardError, match="at revision 2, not 1"):
        ledger.update_reward(made["id"], expected_revision=1, cost_in_points=100)
    assert ledger.update_reward(made["id"], status="PAUSED")["revision"] == 3
    assert ledger.update_reward(made["id"], status="PAUSED")["revision"] == 3  # no change
    percent = ledger.update_reward(made["id"], kind="discount_percent", value=Decimal("12.5"))
    assert (percent["kind"], percent["value"]) == ("discount_percent", "12.5")
    with pytest.raises(RewardNotFound):
        ledger.update_reward(999, status="ACTIVE")
    assert [r["id"] for r in ledger.list_rewards()["items"]] == [made["id"]]


@pytest.mark.parametrize("terms", [
    {"kind": "discount_amount", "value": None, "currency": "USD"},
    {"kind": "discount_amount", "value": Decimal("5"), "currency": None},
    {"kind": "discount_amount", "value": Decimal("5"), "currency": "usd"},
    {"kind": "discount_percent", "value": Decimal("101"), "currency": None},
    {"kind": "discount_percent", "value": Decimal("0.5"), "currency": None},
    {"kind": "free_shipping", "value": Decimal("1"), "currency": None},
    {"kind": "gift", "value": None, "currency": None},
    {"kind": "custom", "value": None, "currency": None, "cost_in_points": 0},
    {"kind": "custom", "value": None, "currency": None, "cost_in_points": 10_000_000},
    {"kind": "custom", "value": None, "currency": None, "name": ""},
])
def test_invalid_rewards_are_refused(ledger: Ledger, terms: dict[str, Any]) -> None:
    with pytest.raises(InvalidReward):
        ledger.create_reward(**{"name": "x", "cost_in_points": 10, **terms})
    assert ledger.list_rewards()["items"] == []


def test_unknown_redemptions(ledger: Ledger) -> None:
    with pytest.raises(RedemptionNotFound):
        ledger.get_redemption(code="AAAA-BBBB-CCCC-DDDD")
    with pytest.raises(RedemptionNotFound):
        ledger.get_redemption(redemption_id="00000000-0000-0000-0000-000000000000")
