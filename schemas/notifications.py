"""The outgoing events' contract: what subscribers receive on `loyalty.notifications`
and by webhook, one JSON Schema per event type in schemas/json/.

Every event is `{id, type, occurred_at, account_id, contact_id, data}`; `id` is unique
and stable (a consumer drops duplicates by it) and `data` depends on the type.
`account.tier_changed` is written by a trigger on `account_tiers`, `points.expiring_soon`
by the expiration run (migration 0012).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

#: The exchange every event is published to, with the event type as routing key.
EXCHANGE = "loyalty.notifications"


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AccountCreatedData(_Data):
    balance: int = Field(ge=0)
    revision: int = Field(ge=1)


class PointsUpdatedData(_Data):
    """One ledger entry, as written: every entry type (EARN, ADJUST, REDEEM, REFUND,
    REVERSE, EXPIRE) produces one."""

    transaction_id: UUID
    type: str = Field(description="the ledger entry type: EARN, ADJUST, REDEEM, REFUND, ...")
    amount: int
    balance_after: int = Field(ge=0)
    revision: int = Field(ge=2, description="the account's revision after this entry")
    description: str
    event_id: str | None = Field(description="the shop event that earned the points, if any")
    order_id: str | None


class TierChangedData(_Data):
    """An account's tier changed (issue 11): tier names, null for the base level (no tier)."""

    previous_tier: str | None
    tier: str | None


class ExpiringSoonData(_Data):
    """Points expire soon (issue 11): sent once per lot (`lots` mode) or per account and
    quiet period (`inactivity` mode), LOYALTY_EXPIRING_SOON_DAYS before they expire;
    shaped as the account's `points_expiration`."""

    expiration_date: datetime
    expiring_points: int = Field(gt=0)


class RedemptionData(BaseModel):
    """The redemption row as the redemptions table holds it (issue 10); its columns are
    that table's, so further fields are allowed."""

    model_config = ConfigDict(extra="allow")
    id: Any
    account_id: UUID
    status: str


def _event(type_name: str, data: type[BaseModel]) -> type[BaseModel]:
    model = type(
        "Event", (BaseModel,),
        {
            "__annotations__": {
                "id": UUID, "type": Literal[type_name],
                "occurred_at": datetime, "account_id": UUID, "contact_id": str, "data": data,
            },
            "model_config": ConfigDict(extra="forbid", title=type_name),
            "__doc__": f"The `{type_name}` event.",
        },
    )
    return model


#: Event type -> its model. The order is the documented one.
EVENTS: dict[str, type[BaseModel]] = {
    "account.created": _event("account.created", AccountCreatedData),
    "account.points_updated": _event("account.points_updated", PointsUpdatedData),
    "account.tier_changed": _event("account.tier_changed", TierChangedData),
    "points.expiring_soon": _event("points.expiring_soon", ExpiringSoonData),
    "redemption.created": _event("redemption.created", RedemptionData),
    "redemption.refunded": _event("redemption.refunded", RedemptionData),
}

EVENT_TYPES = tuple(EVENTS)


def event_json_schema(type_name: str) -> dict[str, Any]:
    schema = EVENTS[type_name].model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
