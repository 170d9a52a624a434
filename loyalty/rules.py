"""Earn-rule arithmetic: pure, so it is exhaustively unit-tested without a database.

Money is Decimal throughout. A float would turn 0.1 + 0.2 into 0.30000000000000004
and, after floor(), cost a customer a point.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Context, Decimal
from typing import Literal

from loyalty.errors import InvalidRule, RuleError
from schemas.events import MAX_POINTS_AT_ONCE

Trigger = Literal["signup", "order.completed", "activity"]
Kind = Literal["fixed", "conversion"]
Status = Literal["ACTIVE", "PAUSED"]

TRIGGERS: tuple[str, ...] = ("signup", "order.completed", "activity")
KINDS: tuple[str, ...] = ("fixed", "conversion")
STATUSES: tuple[str, ...] = ("ACTIVE", "PAUSED")
MAX_RULE_POINTS = 1_000_000_000
#: Points one event may earn at most (Wix's earnPoints limit).
MAX_EARN_POINTS = MAX_POINTS_AT_ONCE
MAX_MONEY = Decimal("99999999999999.9999")
#: Enough digits that a total (18) times a rule's points (10) is never rounded.
_EXACT = Context(prec=80)


@dataclass(frozen=True)
class EarnRule:
    id: int
    name: str
    trigger: str
    kind: str
    points: int
    #: M in "P points per M money units"; None for fixed rules.
    money_amount: Decimal | None
    currency: str | None
    status: str
    revision: int
    #: The activity an `activity` rule earns for; None for other triggers.
    activity: str | None = None
    #: Tier id -> the points (fixed) or P of "P per M" (conversion) at that tier (0011).
    tier_points: Mapping[int, int] = field(default_factory=dict)

    def points_for(self, total: Decimal | None = None) -> int:
        return compute_points(self.kind, self.points, self.money_amount, total)

    def tier_terms(self, tier_id: int | None) -> tuple[EarnRule, int | None]:
        """The rule as it applies at `tier_id`, and the tier if it changed the terms."""
        if tier_id is None or tier_id not in self.tier_points:
            return self, None
        return replace(self, points=self.tier_points[tier_id]), tier_id


def compute_points(kind: str, points: int, money_amount: Decimal | None, total: Decimal | None) -> int:
    if kind == "fixed":
        return points
    if kind != "conversion" or money_amount is None or money_amount <= 0:
        raise RuleError(f"rule kind {kind!r} cannot convert money")
    if total is None or not total.is_finite() or total < 0:
        raise RuleError("a conversion rule needs a non-negative finite order total")
    # Exact: integer division of exact products (all positive, so truncation is floor),
    # as PostgreSQL's div() computes it when `loyalty verify` checks an EARN again.
    return int(_EXACT.divide_int(_EXACT.multiply(total, points), money_amount))


def validate_rule(
    *,
    trigger: str,
    kind: str,
    points: int,
    money_amount: Decimal | None,
    currency: str | None,
    status: str = "ACTIVE",
    activity: str | None = None,
) -> None:
    """Reject what the database CHECKs would reject, with a message a person can act on."""
    if trigger not in TRIGGERS:
        raise InvalidRule(f"trigger must be one of {', '.join(TRIGGERS)}")
    if (trigger == "activity") != (activity is not None):
        raise InvalidRule("an activity rule names its activity (--activity), and only it does")
    if activity is not None and not 1 <= len(activity) <= 100:
        raise InvalidRule("activity must be 1 to 100 characters")
    if trigger == "activity" and (kind != "fixed" or currency is not None):
        raise InvalidRule("an activity rule is a fixed amount with no currency")
    if kind not in KINDS:
        raise InvalidRule(f"kind must be one of {', '.join(KINDS)}")
    if status not in STATUSES:
        raise InvalidRule(f"status must be one of {', '.join(STATUSES)}")
    if not 0 < points <= MAX_RULE_POINTS:
        raise InvalidRule(f"points must be between 1 and {MAX_RULE_POINTS}")
    if kind == "fixed" and points > MAX_EARN_POINTS:
        raise InvalidRule(f"a fixed rule gives at most {MAX_EARN_POINTS} points: one event"
                          " earns no more")
    if kind == "fixed" and money_amount is not None:
        raise InvalidRule("a fixed rule takes no money amount")
    if kind == "conversion":
        if money_amount is None or not money_amount.is_finite() or money_amount <= 0:
            raise InvalidRule("a conversion rule needs a money amount M above 0, as in P points per"
                            " M money units (--per on the command line)")
        if money_amount > MAX_MONEY or money_amount.as_tuple().exponent < -4:  # type: ignore[operator]
            raise InvalidRule("the money amount allows at most 14 digits and 4 decimals")
    if trigger == "signup" and (kind != "fixed" or currency is not None):
        raise InvalidRule("a signup rule is a fixed amount with no currency")
    if currency is not None and not (len(currency) == 3 and currency.isascii() and currency.isupper()):
        raise InvalidRule("currency must be an ISO 4217 code such as USD")


def select_rule(rules: list[EarnRule], trigger: str, currency: str | None) -> EarnRule | None:
    """The active rule for an event: one restricted to its currency wins over a general one."""
    active = [r for r in rules if r.status == "ACTIVE" and r.trigger == trigger]
    for rule in active:
        if currency is not None and rule.currency == currency:
            return rule
    for rule in active:
        if rule.currency is None:
            return rule
    return None
