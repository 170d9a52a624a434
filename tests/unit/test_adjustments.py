import pytest

from loyalty.adjustments import decide_adjustment


@pytest.mark.parametrize(
    ("balance", "revision", "amount", "new_balance", "expected_revision", "applied", "delta",
     "after", "reason"),
    [
        (100, 3, 50, None, None, True, 50, 150, None),
        (100, 3, -100, None, None, True, -100, 0, None),
        (100, 3, -101, None, None, False, 0, 100, "balance_below_zero"),
        (100, 3, None, 0, None, True, -100, 0, None),
        (100, 3, None, 250, 3, True, 150, 250, None),
        (100, 3, None, 100, None, True, 0, 100, None),
        (100, 3, 5, None, 2, False, 0, 100, "revision_mismatch"),
        (100, 3, 5, None, 4, False, 0, 100, "revision_mismatch"),
        (999_999_990, 1, 9_999_999, None, None, False, 0, 999_999_990, "balance_above_maximum"),
    ],
)
def test_decide_adjustment(balance: int, revision: int, amount: int | None,
                           new_balance: int | None, expected_revision: int | None, applied: bool,
                           delta: int, after: int, reason: str | None) -> None:
    decision = decide_adjustment(balance=balance, revision=revision, amount=amount,
                                 new_balance=new_balance, expected_revision=expected_revision)
    assert (decision.applied, decision.delta, decision.balance_after, decision.reason) == (
        applied, delta, after, reason)
    assert decision.balance_before == balance


def test_exactly_one_of_amount_and_balance() -> None:
    with pytest.raises(ValueError):
        decide_adjustment(balance=0, revision=1, amount=1, new_balance=1, expected_revision=None)
    with pytest.raises(ValueError):
        decide_adjustment(balance=0, revision=1, amount=None, new_balance=None,
                          expected_revision=None)
