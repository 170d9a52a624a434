"""Refund arithmetic: min(E, floor(E * R / T)) in all, never more than E, never drifting."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from loyalty.refunds import Reversal, points_due, reversal

D = Decimal


@pytest.mark.parametrize(("earned", "total", "refunded", "due"), [
    (100, D("100"), D("0"), 0),
    (100, D("100"), D("50"), 50),
    (100, D("100"), D("100"), 100),
    (100, D("100"), D("150"), 100),  # refunds above the total take all, never more
    (49, D("49.90"), D("10.00"), 9),  # 9.819... floors to 9
    (49, D("49.90"), D("49.90"), 49),
    (3, D("0.03"), D("0.01"), 1),
    (1, D("3"), D("2.9999"), 0),  # just below one point: floor is 0
    (9_999_999, D("99999999999999.9999"), D("0.0001"), 0),
    (9_999_999, D("99999999999999.9999"), D("99999999999999.9998"), 9_999_998),
    (0, D("100"), D("100"), 0),  # an order that earned nothing gives nothing back
    (100, D("0"), D("5"), 100),  # a zero total (a fixed rule): any refund is all of it
    (100, None, D("5"), 100),  # an order whose total was never kept: all of it
])
def test_points_due(earned: int, total: Decimal | None, refunded: Decimal, due: int) -> None:
    assert points_due(earned, total, refunded) == due


def _apply(earned: int, total: Decimal, amounts: list[Decimal], balance: int = 10**9
           ) -> list[Reversal]:
    refunded, taken, out = D(0), 0, []
    for amount in amounts:
        step = reversal(earned=earned, total=total, refunded_before=refunded, amount=amount,
                        taken_before=taken, balance=balance)
        refunded += amount
        taken += step.taken
        balance -= step.taken
        out.append(step)
    return out


def test_many_partial_refunds_never_exceed_what_was_earned_and_do_not_drift() -> None:
    rng = random.Random(10)
    for _ in range(500):
        earned = rng.randint(0, 9_999_999)
        total = D(rng.randint(1, 10**8)) / 100
        amounts = [D(rng.randint(1, 10**6)) / 100 for _ in range(rng.randint(1, 40))]
        steps = _apply(earned, total, amounts)
        running = D(0)
        taken = 0
        for amount, step in zip(amounts, steps, strict=True):
            running += amount
            taken += step.taken
            # After each refund, what was taken in all is exactly the formula's figure.
            assert taken == min(earned, int(earned * running // total))
            assert step.shortfall == 0
        assert taken <= earned


def test_a_full_refund_in_pieces_takes_all_that_was_earned() -> None:
    # 49.90 refunded as 4.99 ten times: no rounding is lost along the way.
    steps = _apply(49, D("49.90"), [D("4.99")] * 10)
    assert [s.taken for s in steps] == [4, 5, 5, 5, 5, 5, 5, 5, 5, 5]
    assert sum(s.taken for s in steps) == 49


def test_thirds_of_an_order_do_not_drift() -> None:
    steps = _apply(100, D("30"), [D("10"), D("10"), D("10")])
    assert [s.taken for s in steps] == [33, 33, 34]


def test_the_balance_policy_takes_what_the_balance_holds_and_records_the_shortfall() -> None:
    step = reversal(earned=100, total=D("100"), refunded_before=D(0), amount=D("100"),
                    taken_before=0, balance=30)
    assert step == Reversal(due=100, taken=30, shortfall=70)
    # A later refund of the same order is due the new figure less what was taken.
    later = reversal(earned=100, total=D("100"), refunded_before=D("100"), amount=D("10"),
                     taken_before=30, balance=500)
    assert later == Reversal(due=70, taken=70, shortfall=0)


def test_an_empty_balance_takes_nothing() -> None:
    assert reversal(earned=10, total=D("10"), refunded_before=D(0), amount=D("5"),
                    taken_before=0, balance=0) == Reversal(due=5, taken=0, shortfall=5)
