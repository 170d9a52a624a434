"""Staff and operator requests: the payloads of the `loyalty.admin` queue's tasks."""

from __future__ import annotations

from typing import Annotated, Any, Self
from uuid import UUID

from pydantic import AfterValidator, ConfigDict, Field, WithJsonSchema, model_validator

from schemas.contract import Contract
from schemas.fields import (
    MAX_BALANCE,
    MAX_POINTS_AT_ONCE,
    NO_NUL,
    Description,
    Email,
    Id,
    Points,
    Timestamp,
    Uuid,
)


class AdjustPointsRequest(Contract):
    """Payload of `loyalty.accounts.adjust_points`: staff changes an account's points."""

    model_config = ConfigDict(
        title="loyalty.accounts.adjust_points",
        json_schema_extra={
            "allOf": [
                {"oneOf": [{"required": ["account_id"]}, {"required": ["contact_id"]}]},
                {"oneOf": [{"required": ["amount"]}, {"required": ["balance"]}]},
            ]
        },
    )

    request_id: Id
    account_id: Annotated[str, AfterValidator(lambda v: str(UUID(v))),
                          WithJsonSchema({"type": "string", "format": "uuid"})] | None = None
    contact_id: Id | None = None
    amount: Annotated[int, Field(ge=-MAX_POINTS_AT_ONCE, le=MAX_POINTS_AT_ONCE)] | None = None
    balance: Annotated[int, Field(ge=0, le=MAX_BALANCE)] | None = None
    description: Annotated[str, Field(min_length=1, max_length=100, pattern=NO_NUL)]
    actor: Id
    revision: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.account_id is None) == (self.contact_id is None):
            raise ValueError("give exactly one of account_id and contact_id")
        if (self.amount is None) == (self.balance is None):
            raise ValueError("give exactly one of amount and balance")
        if self.amount == 0:
            raise ValueError("amount must not be 0")
        return self


#: Rewards per redemption.
MAX_REDEEM_COUNT = 100


def _one_account(model: Any) -> None:
    if (model.account_id is None) == (model.contact_id is None):
        raise ValueError("give exactly one of account_id and contact_id")


_ONE_ACCOUNT: dict[str, Any] = {"oneOf": [{"required": ["account_id"]},
                                          {"required": ["contact_id"]}]}


class CreateAccountRequest(Contract):
    """Payload of `loyalty.accounts.create`: staff open an account for a contact (Wix
    createAccount); the contact is registered if it is new."""

    model_config = ConfigDict(title="loyalty.accounts.create")

    request_id: Id
    contact_id: Id
    member_id: Id | None = None
    email: Email | None = None
    name: Annotated[str, Field(min_length=1, max_length=256, pattern=NO_NUL)] | None = None


class EarnPointsRequest(Contract):
    """Payload of `loyalty.accounts.earn_points`: staff credit points for an activity
    (Wix earnPoints); one EARN entry with no event and no rule."""

    model_config = ConfigDict(title="loyalty.accounts.earn_points",
                              json_schema_extra={"allOf": [_ONE_ACCOUNT]})

    request_id: Id
    account_id: Uuid | None = None
    contact_id: Id | None = None
    amount: Points
    activity: Annotated[str, Field(min_length=1, max_length=100, pattern=NO_NUL)]
    description: Description | None = None
    actor: Id

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        _one_account(self)
        return self


class RedeemPointsRequest(Contract):
    """Payload of `loyalty.accounts.redeem_points`: spend points on `count` of a reward,
    or on `amount` points (Wix redeemPoints); one REDEEM entry and one redemption."""

    model_config = ConfigDict(
        title="loyalty.accounts.redeem_points",
        json_schema_extra={"allOf": [
            _ONE_ACCOUNT,
            {"oneOf": [{"required": ["reward_id"]},
                       {"required": ["amount"], "not": {"required": ["count"]}}]},
        ]},
    )

    request_id: Id
    account_id: Uuid | None = None
    contact_id: Id | None = None
    reward_id: Annotated[int, Field(ge=1, le=2**63 - 1)] | None = None
    count: Annotated[int, Field(ge=1, le=MAX_REDEEM_COUNT)] | None = None
    amount: Points | None = None
    revision: Annotated[int, Field(ge=0)] | None = None
    reference_id: Id | None = None
    actor: Id

    @model_validator(mode="after")
    def _reward_or_amount(self) -> Self:
        _one_account(self)
        if (self.reward_id is None) == (self.amount is None):
            raise ValueError("give exactly one of reward_id and amount")
        if self.amount is not None and self.count is not None:
            raise ValueError("count goes with reward_id, not with amount")
        return self


class RefundTransactionRequest(Contract):
    """Payload of `loyalty.accounts.refund_transaction`: give back the points of a REDEEM
    transaction (Wix refundTransaction), as one REFUND entry."""

    model_config = ConfigDict(title="loyalty.accounts.refund_transaction")

    request_id: Id
    transaction_id: Uuid
    actor: Id
    description: Description | None = None


class ReplayRequest(Contract):
    """Payload of `loyalty.deadletters.replay`: which pending dead letters to replay."""

    model_config = ConfigDict(
        title="loyalty.deadletters.replay",
        json_schema_extra={"oneOf": [{"required": ["ids"]}, {"required": ["reason"]},
                                     {"required": ["since"]}, {"required": ["all"]}]},
    )

    ids: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1, max_length=10_000)] | None = None
    reason: Annotated[str, Field(min_length=1, max_length=64, pattern=NO_NUL)] | None = None
    since: Timestamp | None = None
    all: bool | None = None
    dry_run: bool = False
    limit: Annotated[int, Field(ge=1, le=1_000_000)] = 100_000

    @model_validator(mode="after")
    def _one_selector(self) -> Self:
        chosen = [self.ids is not None, self.reason is not None, self.since is not None,
                  bool(self.all)]
        if sum(chosen) != 1:
            raise ValueError("give exactly one of ids, reason, since and all (true)")
        return self


class ActivatePointsRequest(Contract):
    """Payload of `loyalty.program.activate_points` (periodic, queue `loyalty.admin`): make
    available the pending points due at `as_of` (default: now). Idempotent."""

    model_config = ConfigDict(title="loyalty.program.activate_points")

    as_of: Timestamp | None = None


class RecalculateTiersRequest(Contract):
    """Payload of `loyalty.program.recalculate_tiers` (periodic, queue `loyalty.admin`):
    every account's tier as of `as_of` (default: now), as the rolling window slides."""

    model_config = ConfigDict(title="loyalty.program.recalculate_tiers")

    as_of: Timestamp | None = None


class ExpirePointsRequest(Contract):
    """Payload of `loyalty.program.expire_points` (periodic, queue `loyalty.admin`): expire
    what is due at `as_of` (default: now), so operators can backfill and tests can move
    the clock. Idempotent: the same moment twice expires nothing twice."""

    model_config = ConfigDict(title="loyalty.program.expire_points")

    as_of: Timestamp | None = None
