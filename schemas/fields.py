"""The contract's field types: ids, timestamps, money, currencies, emails, and their bounds.

Each type checks a value and, when it refuses one, says what is expected; the JSON
Schema it declares is what schemas/json/ publishes for producers in other languages.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated
from uuid import UUID

from pydantic import AfterValidator, BeforeValidator, Field, PlainSerializer, WithJsonSchema

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


def check_visible_id(value: str) -> str:
    if not _VISIBLE.fullmatch(value):
        bad = next(c for c in value if not _VISIBLE.fullmatch(c))
        raise ValueError(f"must not contain control or invisible characters (found U+{ord(bad):04X})")
    return value


Id = Annotated[
    str,
    Field(min_length=1, max_length=256),
    AfterValidator(check_visible_id),
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


#: An account's or a transaction's id: a UUID, written back in its canonical form.
Uuid = Annotated[str, AfterValidator(lambda v: str(UUID(v))),
                      WithJsonSchema({"type": "string", "format": "uuid"})]
#: Points one staff earn or redemption moves: 1 to 9,999,999.
Points = Annotated[int, Field(ge=1, le=MAX_POINTS_AT_ONCE)]
Description = Annotated[str, Field(min_length=1, max_length=100, pattern=NO_NUL)]
