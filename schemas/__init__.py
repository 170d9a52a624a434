"""Public message contracts: pydantic models plus JSON Schema files in schemas/json/."""

from schemas.events import (
    TASKS,
    AdjustPointsRequest,
    Contract,
    OrderCompletedEvent,
    SignupEvent,
    json_schema,
)

__all__ = [
    "TASKS",
    "AdjustPointsRequest",
    "Contract",
    "OrderCompletedEvent",
    "SignupEvent",
    "json_schema",
]
