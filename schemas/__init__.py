"""Public message contracts: pydantic models plus JSON Schema files in schemas/json/.

`fields` (the field types and bounds), `contract` (the base model and argument
parsing), `events` (shop events and the task table), `requests` (staff and operator
requests), `notifications` (outgoing events).
"""

from schemas.contract import Contract, PayloadError, json_schema, parse_task_args
from schemas.events import TASKS, BulkEvents, OrderCompletedEvent, SignupEvent
from schemas.requests import (
    AdjustPointsRequest,
    CreateAccountRequest,
    EarnPointsRequest,
    RedeemPointsRequest,
    RefundTransactionRequest,
    ReplayRequest,
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
