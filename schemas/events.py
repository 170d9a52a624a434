"""Shop events, the bulk message that carries many of them, and the task table: every
task's name, queue and payload model, the whole public contract in one place.

The field types are in `schemas.fields`, the base model and argument parsing in
`schemas.contract`, the staff and operator requests in `schemas.requests`; their names
can still be imported from here.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from schemas.contract import C, Contract, PayloadError, describe_errors, json_schema, parse_task_args
from schemas.fields import (
    DECIMAL,
    EARLIEST_OCCURRED_AT,
    EMAIL,
    MAX_BALANCE,
    MAX_POINTS_AT_ONCE,
    NO_NUL,
    RFC3339,
    VISIBLE_ID,
    Currency,
    Description,
    Email,
    Id,
    OccurredAt,
    Points,
    RefundAmount,
    Timestamp,
    Total,
    Uuid,
    check_visible_id,
    set_max_future_skew,
)
from schemas.requests import (
    MAX_REDEEM_COUNT,
    ActivatePointsRequest,
    AdjustPointsRequest,
    CreateAccountRequest,
    EarnPointsRequest,
    ExpirePointsRequest,
    RecalculateTiersRequest,
    RedeemPointsRequest,
    RefundTransactionRequest,
    ReplayRequest,
)


class SignupEvent(Contract):
    """Payload of `loyalty.events.signup`: a customer became known to the shop."""

    model_config = ConfigDict(title="loyalty.events.signup")

    event_id: Id
    contact_id: Id
    member_id: Id | None = None
    email: Email | None = None
    name: Annotated[str, Field(min_length=1, max_length=256, pattern=NO_NUL)] | None = None
    occurred_at: OccurredAt


class OrderCompletedEvent(Contract):
    """Payload of `loyalty.events.order_completed`: an order was paid and completed."""

    model_config = ConfigDict(title="loyalty.events.order_completed")

    event_id: Id
    contact_id: Id
    order_id: Id
    total: Total
    currency: Currency
    occurred_at: OccurredAt


class ActivityEvent(Contract):
    """Payload of `loyalty.events.activity`: a customer did something a rule rewards.

    With `reference_id` (a review's id, say) it earns at most once per account,
    activity and reference.
    """

    model_config = ConfigDict(title="loyalty.events.activity")

    event_id: Id
    contact_id: Id
    activity: Annotated[str, Field(min_length=1, max_length=100), AfterValidator(check_visible_id),
                        WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 100,
                                        "pattern": VISIBLE_ID})]
    reference_id: Id | None = None
    occurred_at: OccurredAt


class OrderRefundedEvent(Contract):
    """Payload of `loyalty.events.order_refunded`: money of a completed order was refunded."""

    model_config = ConfigDict(title="loyalty.events.order_refunded")

    event_id: Id
    contact_id: Id
    order_id: Id
    refund_id: Id
    amount: RefundAmount
    currency: Currency
    occurred_at: OccurredAt


#: Events per bulk message: big enough to amortise a message, small enough for one batch.
BULK_MAX_EVENTS = 1000

#: A bulk item's `type` -> the single-event task whose payload it carries.
BULK_TYPES = {"signup": "loyalty.events.signup",
              "order.completed": "loyalty.events.order_completed",
              "activity": "loyalty.events.activity",
              "order.refunded": "loyalty.events.order_refunded"}


class BulkItem(BaseModel):
    """One event of a bulk message; its payload is checked on its own, against its task."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    type: Annotated[str, WithJsonSchema({"type": "string", "enum": sorted(BULK_TYPES)})]
    payload: dict[str, Any] = Field(description=(
        "the payload of loyalty.events.signup, order_completed, activity or order_refunded,"
        " by type"))


class BulkEvents(Contract):
    """Payload of `loyalty.events.bulk`: many events in one message, for importers and replays.

    Each event keeps its own idempotency and its own dead-lettering: a bad one is
    dead-lettered alone, under its single-event task name, and the others apply.
    """

    model_config = ConfigDict(title="loyalty.events.bulk")

    events: Annotated[list[BulkItem], Field(min_length=1, max_length=BULK_MAX_EVENTS)]


#: The two queues. Shop events travel apart from staff and operator requests: anyone
#: who may publish events must not be able to change balances (docs/permissions.md).
EVENTS_QUEUE = "loyalty.events"
ADMIN_QUEUE = "loyalty.admin"

# Task name -> (queue, payload model): the whole public contract in one table. The
# producer side (`loyalty publish`, the JSON Schema files) reads it without the worker;
# the worker's table (`tasks.table`) adds a handler to each entry.
TASKS: dict[str, tuple[str, type[Contract]]] = {
    "loyalty.events.signup": (EVENTS_QUEUE, SignupEvent),
    "loyalty.events.order_completed": (EVENTS_QUEUE, OrderCompletedEvent),
    "loyalty.events.bulk": (EVENTS_QUEUE, BulkEvents),
    "loyalty.events.activity": (EVENTS_QUEUE, ActivityEvent),
    "loyalty.events.order_refunded": (EVENTS_QUEUE, OrderRefundedEvent),
    "loyalty.accounts.adjust_points": (ADMIN_QUEUE, AdjustPointsRequest),
    "loyalty.accounts.create": (ADMIN_QUEUE, CreateAccountRequest),
    "loyalty.accounts.earn_points": (ADMIN_QUEUE, EarnPointsRequest),
    "loyalty.accounts.redeem_points": (ADMIN_QUEUE, RedeemPointsRequest),
    "loyalty.accounts.refund_transaction": (ADMIN_QUEUE, RefundTransactionRequest),
    "loyalty.deadletters.replay": (ADMIN_QUEUE, ReplayRequest),
    "loyalty.program.activate_points": (ADMIN_QUEUE, ActivatePointsRequest),
    "loyalty.program.expire_points": (ADMIN_QUEUE, ExpirePointsRequest),
    "loyalty.program.recalculate_tiers": (ADMIN_QUEUE, RecalculateTiersRequest),
}

#: Payload model -> its task's name: code names a task by its contract, not by a string.
TASK_OF: dict[type[Contract], str] = {model: name for name, (_queue, model) in TASKS.items()}

#: Every queue a task runs from, in the order of the table.
QUEUES: tuple[str, ...] = tuple(dict.fromkeys(queue for queue, _model in TASKS.values()))


def unknown_bulk_type(kind: object) -> str:
    """The error of a bulk item whose type no task takes."""
    return (f"type: unknown event type {kind!r}; known: {', '.join(sorted(BULK_TYPES))}")


# The names of `schemas.fields`, `schemas.contract` and `schemas.requests` stay importable
# from here, where they were all defined before the split.
__all__ = [
    "ADMIN_QUEUE",
    "BULK_MAX_EVENTS",
    "BULK_TYPES",
    "DECIMAL",
    "EARLIEST_OCCURRED_AT",
    "EMAIL",
    "EVENTS_QUEUE",
    "MAX_BALANCE",
    "MAX_POINTS_AT_ONCE",
    "MAX_REDEEM_COUNT",
    "NO_NUL",
    "QUEUES",
    "RFC3339",
    "TASKS",
    "TASK_OF",
    "VISIBLE_ID",
    "ActivatePointsRequest",
    "ActivityEvent",
    "AdjustPointsRequest",
    "BulkEvents",
    "BulkItem",
    "C",
    "Contract",
    "CreateAccountRequest",
    "Currency",
    "Description",
    "EarnPointsRequest",
    "Email",
    "ExpirePointsRequest",
    "Id",
    "OccurredAt",
    "OrderCompletedEvent",
    "OrderRefundedEvent",
    "PayloadError",
    "Points",
    "RecalculateTiersRequest",
    "RedeemPointsRequest",
    "RefundAmount",
    "RefundTransactionRequest",
    "ReplayRequest",
    "SignupEvent",
    "Timestamp",
    "Total",
    "Uuid",
    "describe_errors",
    "json_schema",
    "parse_task_args",
    "set_max_future_skew",
    "unknown_bulk_type",
]
