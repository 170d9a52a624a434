"""Issue 8, pure parts: timestamps with sense, messages that say what is expected,
text that cannot break a table, and text logs that carry the facts."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from loyalty.cli import printable
from loyalty.settings import Settings
from schemas.events import OrderCompletedEvent, SignupEvent, describe_errors, set_max_future_skew
from worker.log_format import JsonFormatter, MaskingFormatter, SecretMask


def _order(occurred_at: str) -> dict[str, str]:
    return {"event_id": "e", "contact_id": "c", "order_id": "o", "total": "1.00",
            "currency": "USD", "occurred_at": occurred_at}


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize("occurred_at", ["2099-01-01T00:00:00Z", "1900-01-01T00:00:00Z",
                                         "1999-12-31T23:59:59Z"])
def test_occurred_at_out_of_bounds_is_invalid(occurred_at: str) -> None:
    with pytest.raises(ValidationError):
        OrderCompletedEvent.model_validate(_order(occurred_at))


def test_occurred_at_skew_is_configurable() -> None:
    soon = _iso(datetime.now(UTC) + timedelta(hours=2))
    OrderCompletedEvent.model_validate(_order(soon))  # within the default day
    try:
        set_max_future_skew(60)
        with pytest.raises(ValidationError, match="in the future"):
            OrderCompletedEvent.model_validate(_order(soon))
    finally:
        set_max_future_skew(Settings().max_future_skew)
    assert Settings().max_future_skew == 86400
    assert Settings.from_env({"LOYALTY_MAX_FUTURE_SKEW": "60"}).max_future_skew == 60


def test_errors_say_what_is_expected_not_the_pattern() -> None:
    with pytest.raises(ValidationError) as bad_email:
        SignupEvent.model_validate({"event_id": "e", "contact_id": "c", "email": "a b@c",
                                    "occurred_at": "2026-01-01T00:00:00Z"})
    message = describe_errors(bad_email.value)
    assert message.startswith("email: must be an email address") and "^" not in message
    with pytest.raises(ValidationError) as nul:
        SignupEvent.model_validate({"event_id": "e\x00", "contact_id": "c",
                                    "occurred_at": "2026-01-01T00:00:00Z"})
    assert describe_errors(nul.value) == (
        "event_id: must not contain control or invisible characters (found U+0000)")


@pytest.mark.parametrize(("value", "shown"), [
    ("tab\there", "tab\\there"), ("new\nline", "new\\nline"), ("\x1b[31m", "\\x1b[31m"),
    ("zero\u200bwidth", "zero\\u200bwidth"), ("caf\u00e9 ok", "caf\u00e9 ok"), (True, "true"),
    (False, "false"), (None, "-"), (7, "7"),
])
def test_printable(value: object, shown: str) -> None:
    assert printable(value) == shown


def _record(msg: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("loyalty.batches", logging.WARNING, __file__, 1, msg, None, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_text_logs_carry_the_same_facts_as_json_logs() -> None:
    fields = {"task": "loyalty.events.order_completed", "event_id": "e-1", "contact_id": "bob",
              "reason": "invalid_payload", "detail": "total: must be non-negative",
              "dead_letter_id": 4, "result": {"points": 3}}
    text = MaskingFormatter(SecretMask([]), "%(message)s").format(_record("dead-lettered",
                                                                          **fields))
    assert text == ('dead-lettered task=loyalty.events.order_completed event_id=e-1'
                    ' contact_id=bob reason=invalid_payload'
                    ' detail="total: must be non-negative" dead_letter_id=4'
                    ' result={"points":3}')
    line = json.loads(JsonFormatter(SecretMask([])).format(_record("dead-lettered", **fields)))
    assert {k: line[k] for k in fields} == fields
