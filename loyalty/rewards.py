"""The rewards catalogue's terms: pure, so every branch has a table-driven test.

A reward is what points buy: money off (`discount_amount`, a value in a currency), a
percentage off (`discount_percent`, 1 to 100), `free_shipping`, or `custom` (whatever
the shop hands out). The same rules are CHECK constraints on the `rewards` table.
"""

from __future__ import annotations

from decimal import Decimal

from loyalty.errors import InvalidReward
from schemas.currencies import ISO_4217
from schemas.events import MAX_POINTS_AT_ONCE

KINDS: tuple[str, ...] = ("discount_amount", "discount_percent", "free_shipping", "custom")
STATUSES: tuple[str, ...] = ("ACTIVE", "PAUSED")
#: The most a reward costs: what one redemption may move at once.
MAX_COST = MAX_POINTS_AT_ONCE
MAX_VALUE = Decimal("99999999999999.9999")


def validate_reward(*, name: str, kind: str, value: Decimal | None, currency: str | None,
                    cost_in_points: int, status: str) -> None:
    """Raise `InvalidReward`, saying what is wrong, unless the terms make a reward."""
    if not 1 <= len(name) <= 100:
        raise InvalidReward("name must be 1 to 100 characters")
    if kind not in KINDS:
        raise InvalidReward(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if status not in STATUSES:
        raise InvalidReward(f"status must be ACTIVE or PAUSED, not {status!r}")
    if not 1 <= cost_in_points <= MAX_COST:
        raise InvalidReward(f"cost in points must be 1 to {MAX_COST}, not {cost_in_points}")
    if value is not None and (not value.is_finite() or value.as_tuple().exponent < -4  # type: ignore[operator]
                              or abs(value) > MAX_VALUE):
        raise InvalidReward(f"value {value} must be a number with at most 4 decimals")
    if currency is not None and currency not in ISO_4217:
        raise InvalidReward(f"currency {currency!r} is not an ISO 4217 code in upper case")
    if kind == "discount_amount":
        if value is None or value <= 0 or currency is None:
            raise InvalidReward("a discount_amount reward needs a positive value and a currency")
    elif kind == "discount_percent":
        if value is None or not 1 <= value <= 100 or currency is not None:
            raise InvalidReward("a discount_percent reward needs a value from 1 to 100 and no"
                                " currency")
    elif value is not None or currency is not None:
        raise InvalidReward(f"a {kind} reward has no value and no currency")
