"""Redeeming points and refunding redemptions: the decisions and the codes, pure.

A redemption's `code` is what the shop registers as a coupon in its own checkout, and
what a customer may read out over the phone. So it is drawn from a cryptographic source
(`secrets`), has 16 characters of an alphabet with no 0/O, 1/I/l or U (30 symbols:
16 x log2(30) = 78.5 bits, above the 64 asked for) and is printed in groups of four.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from schemas.events import MAX_BALANCE

#: Crockford's base 32 without 0 and 1: no two symbols are mistaken for each other.
ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"
GROUPS, GROUP_SIZE = 4, 4
CODE_BITS = GROUPS * GROUP_SIZE * math.log2(len(ALPHABET))


def new_code() -> str:
    symbols = "".join(secrets.choice(ALPHABET) for _ in range(GROUPS * GROUP_SIZE))
    return "-".join(symbols[i:i + GROUP_SIZE] for i in range(0, len(symbols), GROUP_SIZE))


def normalise_code(text: str) -> str:
    """A code as typed or read aloud (any case, with or without dashes or spaces) in its
    printed form; characters outside the alphabet are left for the lookup to miss."""
    bare = "".join(ch for ch in text.upper() if ch not in "- ")
    return "-".join(bare[i:i + GROUP_SIZE] for i in range(0, len(bare), GROUP_SIZE))


@dataclass(frozen=True)
class Reward:
    """What a redemption needs of a reward."""

    id: int
    name: str
    cost_in_points: int
    status: str
    revision: int
    #: Tier id -> what one costs at that tier, instead of `cost_in_points`.
    tier_costs: Mapping[int, int] = field(default_factory=dict)

    def cost_for(self, tier_id: int | None) -> int:
        """What one costs for an account at this tier (None: the base level)."""
        return self.tier_costs.get(tier_id, self.cost_in_points) if tier_id is not None \
            else self.cost_in_points


@dataclass(frozen=True)
class RedeemDecision:
    applied: bool
    points: int = 0
    reason: str | None = None


def decide_redemption(*, balance: int, revision: int, expected_revision: int | None,
                      reward_asked: bool, reward: Reward | None, count: int,
                      amount: int | None, tier_id: int | None = None) -> RedeemDecision:
    """`count` of `reward` (or `amount` points), unless something is in the way.

    The reasons are checked in this order: the reward, the revision, the balance; a
    balance never goes below zero.
    """
    if reward_asked:
        if reward is None:
            return RedeemDecision(applied=False, reason="reward_not_found")
        if reward.status != "ACTIVE":
            return RedeemDecision(applied=False, reason="reward_paused")
        points = reward.cost_for(tier_id) * count
    else:
        if amount is None:
            raise ValueError("a redemption is for a reward or for an amount")
        points = amount
    if expected_revision is not None and expected_revision != revision:
        return RedeemDecision(applied=False, reason="revision_mismatch")
    if points > balance:
        return RedeemDecision(applied=False, reason="insufficient_balance")
    return RedeemDecision(applied=True, points=points)


def refund_refused(*, entry_type: str, refunded: bool, balance: int, points: int) -> str | None:
    """Why a REDEEM transaction's points cannot be given back, or None if they can."""
    if entry_type != "REDEEM":
        return "not_refundable"
    if refunded:
        return "already_refunded"
    if balance + points > MAX_BALANCE:
        return "balance_above_maximum"
    return None
