"""Redemption codes, the redemption and refund decisions, and reward terms: pure, no services."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from loyalty.errors import InvalidReward
from loyalty.redemptions import (
    ALPHABET,
    CODE_BITS,
    Reward,
    decide_redemption,
    new_code,
    normalise_code,
    refund_refused,
)
from loyalty.rewards import validate_reward
from schemas import EarnPointsRequest, RedeemPointsRequest, RefundTransactionRequest

#: The CHECK constraint of migration 0008, ck_redemptions_code_format.
CODE = re.compile(r"^[2-9A-HJKMNP-TV-Z]{4}(-[2-9A-HJKMNP-TV-Z]{4}){3}$")


def test_codes_are_readable_aloud_and_carry_enough_randomness() -> None:
    assert not set("01OIL") & set(ALPHABET) and "U" not in ALPHABET
    assert len(set(ALPHABET)) == len(ALPHABET) == 30
    assert CODE_BITS >= 64
    codes = {new_code() for _ in range(2000)}
    assert len(codes) == 2000
    assert all(CODE.match(c) for c in codes)
    # Every symbol turns up: the draw is over the whole alphabet.
    assert set("".join(codes).replace("-", "")) == set(ALPHABET)


@pytest.mark.parametrize(("typed", "printed"), [
    ("abcd-efgh-jkmn-pqrs", "ABCD-EFGH-JKMN-PQRS"),
    ("ABCDEFGHJKMNPQRS", "ABCD-EFGH-JKMN-PQRS"),
    ("abcd efgh jkmn pqrs", "ABCD-EFGH-JKMN-PQRS"),
])
def test_codes_are_found_however_typed(typed: str, printed: str) -> None:
    assert normalise_code(typed) == printed


MUG = Reward(id=1, name="Mug", cost_in_points=30, status="ACTIVE", revision=1)


@pytest.mark.parametrize(("given", "applied", "points", "reason"), [
    ({}, True, 30, None),
    ({"count": 3}, True, 90, None),
    ({"count": 4}, False, 0, "insufficient_balance"),
    ({"reward": None}, False, 0, "reward_not_found"),
    ({"reward": Reward(1, "Mug", 30, "PAUSED", 2)}, False, 0, "reward_paused"),
    ({"expected_revision": 6}, False, 0, "revision_mismatch"),
    ({"expected_revision": 7, "count": 3}, True, 90, None),
    # A paused reward is reported before a stale revision or a short balance.
    ({"reward": Reward(1, "Mug", 30, "PAUSED", 2), "expected_revision": 1, "count": 9},
     False, 0, "reward_paused"),
    ({"reward_asked": False, "reward": None, "amount": 100}, True, 100, None),
    ({"reward_asked": False, "reward": None, "amount": 101}, False, 0, "insufficient_balance"),
])
def test_decide_redemption(given: dict[str, Any], applied: bool, points: int,
                           reason: str | None) -> None:
    terms: dict[str, Any] = {"balance": 100, "revision": 7, "expected_revision": None,
                             "reward_asked": True, "reward": MUG, "count": 1, "amount": None}
    decision = decide_redemption(**{**terms, **given})
    assert (decision.applied, decision.points, decision.reason) == (applied, points, reason)


@pytest.mark.parametrize(("given", "reason"), [
    ({}, None),
    ({"entry_type": "EARN"}, "not_refundable"),
    ({"entry_type": "REFUND", "refunded": True}, "not_refundable"),
    ({"refunded": True}, "already_refunded"),
    ({"balance": 999_999_950, "points": 49}, None),
    ({"balance": 999_999_950, "points": 50}, "balance_above_maximum"),
])
def test_refund_refused(given: dict[str, Any], reason: str | None) -> None:
    terms: dict[str, Any] = {"entry_type": "REDEEM", "refunded": False, "balance": 0,
                             "points": 10}
    assert refund_refused(**{**terms, **given}) == reason


@pytest.mark.parametrize("terms", [
    {"kind": "discount_amount", "value": Decimal("5.5"), "currency": "EUR"},
    {"kind": "discount_percent", "value": Decimal("100"), "currency": None},
    {"kind": "free_shipping", "value": None, "currency": None},
    {"kind": "custom", "value": None, "currency": None, "cost_in_points": 9_999_999},
])
def test_valid_rewards(terms: dict[str, Any]) -> None:
    validate_reward(**{"name": "x", "cost_in_points": 1, "status": "ACTIVE", **terms})


@pytest.mark.parametrize("terms", [
    {"kind": "discount_amount", "value": Decimal("5.12345"), "currency": "EUR"},
    {"kind": "discount_amount", "value": Decimal("NaN"), "currency": "EUR"},
    {"kind": "discount_amount", "value": Decimal("-1"), "currency": "EUR"},
    {"kind": "discount_percent", "value": Decimal("10"), "currency": "EUR"},
    {"kind": "custom", "value": None, "currency": None, "status": "DELETED"},
])
def test_invalid_rewards(terms: dict[str, Any]) -> None:
    with pytest.raises(InvalidReward):
        validate_reward(**{"name": "x", "cost_in_points": 1, "status": "ACTIVE", **terms})


REDEEM = {"request_id": "r", "contact_id": "c", "reward_id": 1, "actor": "a"}


@pytest.mark.parametrize("change", [
    {"amount": 5}, {"reward_id": None}, {"count": 0}, {"count": 101}, {"reward_id": 0},
    {"reward_id": "1"}, {"account_id": "x"}, {"revision": -1}, {"reference_id": ""},
    {"actor": None}, {"code": "X"},
])
def test_redeem_rejects(change: dict[str, Any]) -> None:
    payload = {k: v for k, v in {**REDEEM, **change}.items() if v is not None}
    with pytest.raises(ValidationError):
        RedeemPointsRequest.model_validate(payload)


def test_redeem_by_amount_and_other_contracts() -> None:
    by_amount = {k: v for k, v in REDEEM.items() if k != "reward_id"}
    assert RedeemPointsRequest.model_validate({**by_amount, "amount": 9_999_999}).amount \
        == 9_999_999
    with pytest.raises(ValidationError):
        RedeemPointsRequest.model_validate({**by_amount, "amount": 5, "count": 1})
    earn = {"request_id": "r", "contact_id": "c", "amount": 1, "activity": "review",
            "actor": "a"}
    EarnPointsRequest.model_validate(earn)
    for change in ({"amount": 0}, {"amount": 10_000_000}, {"activity": ""},
                   {"activity": "x" * 101}, {"account_id": "00000000-0000-0000-0000-000000000000"}):
        with pytest.raises(ValidationError):
            EarnPointsRequest.model_validate({**earn, **change})
    with pytest.raises(ValidationError):
        RefundTransactionRequest.model_validate({"request_id": "r", "transaction_id": "T1",
                                                 "actor": "a"})


def test_every_staff_rejection_reason_is_listed() -> None:
    """The decisions answer only with the reasons the contract lists."""
    from loyalty.errors import STAFF_REJECTIONS

    given: list[str | None] = [refund_refused(entry_type=t, refunded=r, balance=b, points=10)
                               for t in ("REDEEM", "EARN") for r in (False, True)
                               for b in (0, 999_999_999)]
    for reward in (None, MUG, Reward(1, "Mug", 30, "PAUSED", 1)):
        for expected in (None, 1):
            given.append(decide_redemption(balance=10, revision=2, expected_revision=expected,
                                           reward_asked=True, reward=reward, count=1,
                                           amount=None).reason)
    assert {g for g in given if g} == {"not_refundable", "already_refunded",
                                       "balance_above_maximum", "reward_not_found",
                                       "reward_paused", "revision_mismatch",
                                       "insufficient_balance"}
    assert {g for g in given if g} <= set(STAFF_REJECTIONS)
