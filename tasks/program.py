"""Handlers of the periodic program jobs (queue `loyalty.admin`, sent by `loyalty beat`):
each takes an optional `as_of`, so a backfill or a test can choose the moment."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loyalty.ledger import Ledger
    from schemas.events import (
        ActivatePointsRequest,
        ExpirePointsRequest,
        RecalculateTiersRequest,
    )


def _moment(as_of: datetime | None) -> datetime:
    return as_of if as_of is not None else datetime.now(UTC)


def expire_points(ledger: Ledger, request: ExpirePointsRequest) -> dict[str, Any]:
    return ledger.expire_points(_moment(request.as_of))


def activate_points(ledger: Ledger, request: ActivatePointsRequest) -> dict[str, Any]:
    return ledger.activate_points(_moment(request.as_of))


def recalculate_tiers(ledger: Ledger, request: RecalculateTiersRequest) -> dict[str, Any]:
    return ledger.recalculate_tiers(_moment(request.as_of))
