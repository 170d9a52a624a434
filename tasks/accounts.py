"""Handlers of staff requests on accounts (queue `loyalty.admin`); the caller reads the
result back."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loyalty.ledger import Ledger
    from schemas.events import AdjustPointsRequest


def adjust_points(ledger: Ledger, request: AdjustPointsRequest) -> dict[str, Any]:
    return ledger.adjust_points(request)


def rejected(dead_letter: dict[str, Any]) -> dict[str, Any]:
    """A dead-lettered request, answered in the contract's shape: the caller is waiting."""
    return {"status": "rejected", "reason": dead_letter["reason"],
            "detail": dead_letter["detail"], "account": None}
