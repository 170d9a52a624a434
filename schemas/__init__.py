"""Public message contracts: pydantic models plus JSON Schema files in schemas/json/."""

from schemas.events import (
    TASKS,
    AdjustPointsRequest,
    BulkEvents,
    Contract,
    CreateAccountRequest,
    EarnPointsRequest,
    OrderCompletedEvent,
    PayloadError,
    RedeemPointsRequest,
    RefundTransactionRequest,
    ReplayRequest,
    SignupEvent,
    json_schema,
    parse_task_args,
)

__all__ = [
    "TASKS",
    "AdjustPointsRequest",
    "BulkEvents",
    "Contract",
    "CreateAccountRequest",
    "EarnPointsRequest",
    "OrderCompletedEvent",
    "PayloadError",
    "RedeemPointsRequest",
    "RefundTransactionRequest",
    "ReplayRequest",
    "SignupEvent",
    "json_schema",
    "parse_task_args",
]
