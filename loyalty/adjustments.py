"""Manual adjustment decisions, kept pure so every branch has a table-driven test."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.events import MAX_BALANCE


@dataclass(frozen=True)
class AdjustDecision:
    applied: bool
    delta: int = 0
    balance_before: int = 0
    balance_after: int = 0
    reason: str | None = None


def decide_adjustment(
    *,
    balance: int,
    revision: int,
    amount: int | None,
    new_balance: int | None,
    expected_revision: int | None,
) -> AdjustDecision:
    """Either add `amount` or set `new_balance`; never take the balance below zero."""
    if (amount is None) == (new_balance is None):
        raise ValueError("exactly one of amount and new_balance is required")
    if expected_revision is not None and expected_revision != revision:
        return AdjustDecision(applied=False, reason="revision_mismatch", balance_before=balance,
                              balance_after=balance)
    target = balance + amount if amount is not None else new_balance
    assert target is not None
    if target < 0:
        return AdjustDecision(applied=False, reason="balance_below_zero", balance_before=balance,
                              balance_after=balance)
    if target > MAX_BALANCE and target > balance:
        # Refused only when it raises the balance: one that is somehow above the
        # maximum can always be brought down.
        return AdjustDecision(applied=False, reason="balance_above_maximum", balance_before=balance,
                              balance_after=balance)
    return AdjustDecision(applied=True, delta=target - balance, balance_before=balance,
                          balance_after=target)
