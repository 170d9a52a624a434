"""Handlers of staff requests on accounts (queue `loyalty.admin`); the caller reads the
result back."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loyalty.ledger import Ledger
    from schemas.events import (
        AdjustPointsRequest,
        CreateAccountRequest,
        EarnPointsRequest,
        RedeemPointsRequest,
        RefundTransactionRequest,
    )


def adjust_points(ledger: Ledger, request: AdjustPointsRequest) -> dict[str, Any]:
    return ledger.adjust_points(request)


def create_account(ledger: Ledger, request: CreateAccountRequest) -> dict[str, Any]:
    return ledger.create_account(request)


def earn_points(ledger: Ledger, request: EarnPointsRequest) -> dict[str, Any]:
    return ledger.earn_points(request)


def redeem_points(ledger: Ledger, request: RedeemPointsRequest) -> dict[str, Any]:
    return ledger.redeem_points(request)


def refund_transaction(ledger: Ledger, request: RefundTransactionRequest) -> dict[str, Any]:
    return ledger.refund_transaction(request)


def rejected(dead_letter: dict[str, Any]) -> dict[str, Any]:
    """A dead-lettered request (invalid, or a conflict), answered in the contract's shape:
    the caller is waiting."""
    return {"status": "rejected", "reason": dead_letter["reason"],
            "detail": dead_letter["detail"], "account": None}
