"""Message contracts: what producers send and what the worker accepts.

Models are strict (no coercion of 12 into "12") and forbid unknown fields, so a
producer's mistake is reported instead of half-understood. The same models
generate the JSON Schema files under schemas/json/.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Self, TypeVar
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from schemas.currencies import ISO_4217

#: Points one event or one adjustment may move at once, and the most an account may hold
#: (Wix's earnPoints and balance limits): the contract's bounds, which the ledger enforces.
MAX_POINTS_AT_ONCE = 9_999_999
MAX_BALANCE = 999_999_999

RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)
DECIMAL = re.compile(r"^(0|[1-9]\d{0,13})(\.\d{1,4})?$")

#: No NUL characters anywhere: PostgreSQL text cannot store them.
NO_NUL = r"^[^\x00]*$"
#: Ids are compared byte for byte, so nothing a person cannot see may be in one: no
#: control characters (tab, newline, NUL, C1) and no invisible format characters (soft
#: hyphen, zero-width spaces and joiners, bidi controls, line separators, BOM). Otherwise
#: 'order-1' and 'order-1\u200b' would be two orders that earn twice.
VISIBLE_ID = (r"^[^\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e"
              r"\u2060-\u206f\ufeff\ufff9-\ufffb]+$")
_VISIBLE = re.compile(VISIBLE_ID)


def _visible_id(value: str) -> str:
    if not _VISIBLE.fullmatch(value):
        bad = next(c for c in value if not _VISIBLE.fullmatch(c))
        raise ValueError(f"must not contain control or invisible characters (found U+{ord(bad):04X})")
    return value


Id = Annotated[
    str,
    Field(min_length=1, max_length=256),
    AfterValidator(_visible_id),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 256, "pattern": VISIBLE_ID}),
]


def _parse_timestamp(value: object) -> datetime:
    if not isinstance(value, str) or not RFC3339.match(value):
        raise ValueError("must be an RFC 3339 timestamp with a time zone, e.g. 2026-01-31T12:00:00Z")
    text = value[:-1] + "+00:00" if value[-1] in "Zz" else value
    text = text.replace("t", "T")
    # Python accepts at most 6 fractional digits; RFC 3339 allows more.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"not a valid date or time: {exc}") from None


#: Earliest sane `occurred_at`: no shop event predates this.
EARLIEST_OCCURRED_AT = datetime(2000, 1, 1, tzinfo=UTC)
#: How far in the future an `occurred_at` may be (clock skew): LOYALTY_MAX_FUTURE_SKEW.
_max_future_skew = timedelta(days=1)


def set_max_future_skew(seconds: float) -> None:
    """Set by the worker and the producer helper from LOYALTY_MAX_FUTURE_SKEW."""
    global _max_future_skew
    _max_future_skew = timedelta(seconds=seconds)


def _sane_time(value: datetime) -> datetime:
    if value < EARLIEST_OCCURRED_AT:
        raise ValueError(f"must not be before {EARLIEST_OCCURRED_AT.date().isoformat()}")
    latest = datetime.now(UTC) + _max_future_skew
    if value > latest:
        raise ValueError(f"must not be more than {_max_future_skew.total_seconds():g} seconds in"
                         " the future (LOYALTY_MAX_FUTURE_SKEW)")
    return value


def _parse_total(value: object) -> Decimal:
    if not isinstance(value, str) or not DECIMAL.match(value):
        raise ValueError(
            "must be a non-negative decimal string with at most 14 digits and 4 decimals, e.g. \"49.90\""
        )
    return Decimal(value)


def _check_currency(value: str) -> str:
    if value not in ISO_4217:
        raise ValueError("must be an ISO 4217 currency code in upper case, e.g. USD")
    return value


EMAIL = re.compile(r"^[^@\s\x00]+@[^@\s\x00]+$")


def _check_email(value: str) -> str:
    if not EMAIL.match(value):
        raise ValueError("must be an email address: one @ with text on both sides and no"
                         " spaces, e.g. alice@example.com")
    return value


#: Checked by a function, not a Field pattern, so the error says what is expected
#: instead of quoting the regular expression.
Email = Annotated[
    str,
    Field(min_length=3, max_length=320),
    AfterValidator(_check_email),
    WithJsonSchema({"type": "string", "minLength": 3, "maxLength": 320,
                    "pattern": EMAIL.pattern}),
]
Timestamp = Annotated[
    datetime,
    BeforeValidator(_parse_timestamp),
    PlainSerializer(lambda v: v.isoformat(), return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": RFC3339.pattern,
                    "description": "RFC 3339 timestamp with a time zone"}),
]
#: An event's own time: a Timestamp within sane bounds.
OccurredAt = Annotated[Timestamp, AfterValidator(_sane_time)]
Total = Annotated[
    Decimal,
    BeforeValidator(_parse_total),
    PlainSerializer(lambda v: format(v.normalize(), "f"), return_type=str),
    WithJsonSchema({"type": "string", "pattern": DECIMAL.pattern,
                    "description": "Order total as a decimal string, e.g. \"49.90\""}),
]
Currency = Annotated[
    str,
    AfterValidator(_check_currency),
    WithJsonSchema({"type": "string", "enum": sorted(ISO_4217),
                    "description": "ISO 4217 currency code"}),
]


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    def fingerprint(self) -> str:
        """Hash of the normalised payload: equal for re-sends, different for any other content.

        Normalised, so "2026-01-01T00:00:00Z" and "...+00:00", or "49.9" and "49.90",
        count as the same event rather than as a conflict.
        """
        return self.fingerprint_and_json()[0]

    def fingerprint_and_json(self) -> tuple[str, str]:
        """The fingerprint and the normalised payload it hashes, as JSON text (stored as is)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest(), canonical


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


def _parse_refund_amount(value: object) -> Decimal:
    amount = _parse_total(value)
    if amount <= 0:
        raise ValueError("must be a positive decimal string, e.g. \"10.00\"")
    return amount


#: Money refunded: a Total above zero.
RefundAmount = Annotated[
    Decimal,
    BeforeValidator(_parse_refund_amount),
    PlainSerializer(lambda v: format(v.normalize(), "f"), return_type=str),
    WithJsonSchema({"type": "string", "pattern": DECIMAL.pattern,
                    "description": "Money refunded by this refund, a positive decimal string,"
                                   " e.g. \"10.00\""}),
]


class ActivityEvent(Contract):
    """Payload of `loyalty.events.activity`: a customer did something a rule rewards.

    With `reference_id` (a review's id, say) it earns at most once per account,
    activity and reference.
    """

    model_config = ConfigDict(title="loyalty.events.activity")

    event_id: Id
    contact_id: Id
    activity: Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_visible_id),
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


#: An account's or a transaction's id: a UUID, written back in its canonical form.
Uuid = Annotated[str, AfterValidator(lambda v: str(UUID(v))),
                      WithJsonSchema({"type": "string", "format": "uuid"})]
#: Points one staff earn or redemption moves: 1 to 9,999,999.
Points = Annotated[int, Field(ge=1, le=MAX_POINTS_AT_ONCE)]
Description = Annotated[str, Field(min_length=1, max_length=100, pattern=NO_NUL)]
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


C = TypeVar("C", bound=Contract)


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


class PayloadError(ValueError):
    """A message that does not follow the contract; the text says how."""


def parse_task_args(model: type[C], args: Sequence[Any], kwargs: Mapping[str, Any]) -> C:
    """The contract: exactly one positional argument, a JSON object valid for `model`."""
    if kwargs or len(args) != 1 or not isinstance(args[0], dict):
        raise PayloadError("the task takes exactly one positional argument, a JSON object")
    try:
        return model.model_validate(args[0])
    except ValidationError as exc:
        raise PayloadError(describe_errors(exc)) from None


def describe_errors(exc: ValidationError) -> str:
    """A validation failure as one line: `field: problem; field: problem`."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in error["loc"]) or "payload"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "string_pattern_mismatch":
            # Say what is expected, not the regular expression.
            message = ("must not contain NUL characters"
                       if (error.get("ctx") or {}).get("pattern") == NO_NUL
                       else "does not have the expected format")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def unknown_bulk_type(kind: object) -> str:
    """The error of a bulk item whose type no task takes."""
    return (f"type: unknown event type {kind!r}; known: {', '.join(sorted(BULK_TYPES))}")


def json_schema(model: type[Contract]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
