import contextlib
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas import AdjustPointsRequest, OrderCompletedEvent, SignupEvent
from schemas.__main__ import render

ORDER = {"event_id": "e-1", "contact_id": "c-1", "order_id": "o-1", "total": "49.90",
         "currency": "USD", "occurred_at": "2026-01-31T12:00:00Z"}
ADJUST = {"request_id": "r-1", "contact_id": "c-1", "amount": 5, "description": "goodwill",
          "actor": "alice"}


def test_valid_order_parses_money_as_decimal() -> None:
    event = OrderCompletedEvent.model_validate(ORDER)
    assert event.total == Decimal("49.90")
    assert event.occurred_at.utcoffset() is not None


@pytest.mark.parametrize("change", [
    {"total": 49.9}, {"total": "49,90"}, {"total": "-1"}, {"total": "NaN"}, {"total": "Infinity"},
    {"total": "1e3"}, {"total": "123456789012345"}, {"total": "1.23456"}, {"total": ""},
    {"currency": "usd"}, {"currency": "XYZ"}, {"currency": 840},
    {"occurred_at": "2026-01-31T12:00:00"}, {"occurred_at": "2026-01-31"},
    {"occurred_at": "2026-02-31T12:00:00Z"}, {"occurred_at": 1767182400},
    {"event_id": ""}, {"event_id": "x" * 257}, {"event_id": 12}, {"contact_id": None},
    {"contact_id": "a\x00b"}, {"order_id": "\x00"},
    {"extra": "field"},
])
def test_order_rejects(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        OrderCompletedEvent.model_validate({**ORDER, **change})


@pytest.mark.parametrize("missing", sorted(ORDER))
def test_order_requires_every_field(missing: str) -> None:
    with pytest.raises(ValidationError):
        OrderCompletedEvent.model_validate({k: v for k, v in ORDER.items() if k != missing})


def test_fingerprint_ignores_notation_but_not_content() -> None:
    a = OrderCompletedEvent.model_validate(ORDER)
    b = OrderCompletedEvent.model_validate({**ORDER, "total": "49.9",
                                            "occurred_at": "2026-01-31T12:00:00+00:00"})
    c = OrderCompletedEvent.model_validate({**ORDER, "total": "49.91"})
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


@pytest.mark.parametrize("change", [
    {"amount": 0}, {"amount": 10_000_000}, {"amount": -10_000_000}, {"amount": True},
    {"amount": 1.5}, {"balance": 5}, {"amount": None}, {"account_id": "not-a-uuid"},
    {"description": ""}, {"description": "x" * 101}, {"actor": ""}, {"revision": -1},
])
def test_adjust_rejects(change: dict[str, Any]) -> None:
    payload = {k: v for k, v in {**ADJUST, **change}.items() if v is not None}
    with pytest.raises(ValidationError):
        AdjustPointsRequest.model_validate(payload)


def test_adjust_needs_exactly_one_target() -> None:
    both = {**ADJUST, "account_id": "5f0c6a4e-4a43-4c39-9a0e-0c1b2e3d4f5a"}
    with pytest.raises(ValidationError):
        AdjustPointsRequest.model_validate(both)
    neither = {k: v for k, v in ADJUST.items() if k != "contact_id"}
    with pytest.raises(ValidationError):
        AdjustPointsRequest.model_validate(neither)
    set_balance = {k: v for k, v in ADJUST.items() if k != "amount"} | {"balance": 0}
    assert AdjustPointsRequest.model_validate(set_balance).balance == 0


def test_signup_optional_fields() -> None:
    event = SignupEvent.model_validate({"event_id": "s", "contact_id": "c",
                                        "occurred_at": "2026-01-31T12:00:00.123456789+02:00"})
    assert event.member_id is None and event.email is None


def test_json_schema_files_match_models() -> None:
    folder = Path(__file__).resolve().parents[2] / "schemas" / "json"
    for filename, text in render().items():
        assert (folder / filename).read_text() == text, f"run `python -m schemas` ({filename})"
        schema = json.loads(text)
        assert schema["additionalProperties"] is False


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=3),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([*ORDER, "junk"]), json_values, max_size=8))
def test_hostile_payloads_only_raise_validation_errors(payload: dict[str, Any]) -> None:
    with contextlib.suppress(ValidationError):
        OrderCompletedEvent.model_validate(payload)


@pytest.mark.parametrize("invisible", ["\t", "\n", "\x7f", "\x85", "\u00ad", "\u200b", "\u200d",
                                       "\u202e", "\u2066", "\u2028", "\ufeff"])
@pytest.mark.parametrize("field", ["event_id", "contact_id", "order_id"])
def test_ids_refuse_control_and_invisible_characters(field: str, invisible: str) -> None:
    """Issue 7: 'order-1' and 'order-1\\u200b' must not be two orders."""
    with pytest.raises(ValidationError) as info:
        OrderCompletedEvent.model_validate({**ORDER, field: f"order-1{invisible}"})
    assert f"found U+{ord(invisible):04X}" in str(info.value)
    assert info.value.errors()[0]["loc"] == (field,)


@pytest.mark.parametrize("visible", ["order-1", "commande-é", "注文-1", "a b", "x" * 256])
def test_ids_take_any_visible_text(visible: str) -> None:
    assert OrderCompletedEvent.model_validate({**ORDER, "order_id": visible}).order_id == visible
