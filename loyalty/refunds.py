"""Refund arithmetic: how many points a refund takes back. Pure, so it is unit-tested alone.

After refunds of `R` money in all, an order that earned `E` points on a total of `T` has
`min(E, floor(E * R / T))` points taken back in all. Each refund takes that figure minus
what the order's earlier refunds took, so the rounding never accumulates: the running
figure is computed afresh from the running sum of money, never from earlier quotients.

Balance policy: a balance never goes below zero. A refund takes what the balance holds
and records the rest as its `shortfall`; a later refund of the same order is due the
new figure minus what was actually taken, so a shortfall is taken back later if the
customer earns points again before the order is refunded further.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Context, Decimal

#: Exact: E (7 digits) times R (18 digits) is never rounded.
_EXACT = Context(prec=80)


def points_due(earned: int, total: Decimal | None, refunded: Decimal) -> int:
    """Points to have been taken back in all after `refunded` money of the order was refunded.

    A refund of the whole total (or more) takes back all of `earned`; so does any refund
    of an order whose total is unknown (written before totals were kept) or zero.
    """
    if earned <= 0 or refunded <= 0:
        return 0
    if total is None or total <= refunded:
        return earned
    # All positive, so integer division is floor, as PostgreSQL's div() computes it.
    return min(earned, int(_EXACT.divide_int(_EXACT.multiply(Decimal(earned), refunded), total)))


@dataclass(frozen=True)
class Reversal:
    """What one refund is due to take back, what it takes, and what the balance lacked."""

    due: int
    taken: int
    shortfall: int


def reversal(*, earned: int, total: Decimal | None, refunded_before: Decimal, amount: Decimal,
             taken_before: int, balance: int) -> Reversal:
    """One refund of `amount`, after earlier refunds of `refunded_before` that took `taken_before`."""
    due = max(0, points_due(earned, total, refunded_before + amount) - taken_before)
    taken = min(due, max(balance, 0))
    return Reversal(due=due, taken=taken, shortfall=due - taken)
