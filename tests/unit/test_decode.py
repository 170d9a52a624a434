"""The batch path's fast JSON decoding must give what kombu's decoder gives, or defer to it."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from kombu.exceptions import ContentDisallowed, DecodeError
from kombu.message import Message
from kombu.utils.json import dumps

from worker.batching.intake import _decode


def message(body: bytes | str, encoding: str = "utf-8",
            accept: tuple[str, ...] = ("application/json",)) -> Message:
    return Message(body=body, content_type="application/json", content_encoding=encoding,
                   accept=list(accept))


@pytest.mark.parametrize("payload", [
    [[{"event_id": "e", "total": "49.90", "name": "Zoë ✓"}], {}, {"callbacks": None}],
    [[{"nested": [1, 2.5, None, True, {"k": "v"}]}], {}, {}],
])
def test_plain_json_decodes_as_kombu_does(payload: list) -> None:
    body = dumps(payload).encode()
    assert _decode(message(body)) == message(body).decode() == payload


def test_kombu_tagged_values_still_go_through_kombu() -> None:
    # A Python producer's datetime or Decimal is sent as {"__type__": ..., "__value__": ...}.
    when = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
    body = dumps([[{"occurred_at": when, "total": Decimal("1.50")}], {}, {}]).encode()
    assert b"__type__" in body
    decoded = _decode(message(body))
    assert decoded == message(body).decode()
    assert decoded[0][0]["occurred_at"] == when


@pytest.mark.parametrize("body", [b"[[{]", b"\xff\xfe not utf-8"])
def test_undecodable_bodies_raise_as_kombu_does(body: bytes) -> None:
    with pytest.raises(DecodeError):
        message(body).decode()
    with pytest.raises(DecodeError):
        _decode(message(body))


def test_json_is_refused_where_the_worker_accepts_only_signed_messages() -> None:
    # With LOYALTY_SECURITY_* set, Celery accepts only its `auth` serializer: an
    # unsigned JSON body must be refused, not decoded past the signature check.
    body = dumps([[{"event_id": "plain"}], {}, {}]).encode()
    with pytest.raises(ContentDisallowed):
        _decode(message(body, accept=("application/data",)))


def test_prefetch_counts_events_and_bounds_bytes() -> None:
    from worker.batching.intake import prefetch

    base = {"most_events": 2000, "held_events": 0, "held_messages": 0, "per_message": 1.0,
            "held_bytes": 0, "max_bytes": 256 * 2**20, "max_message_bytes": 256 * 2**10}
    # Single events: two batches per process, well inside the byte bound (1,024 messages).
    assert prefetch(**{**base, "max_bytes": 2**40}) == 2000
    assert prefetch(**base) == 1024
    # Bulk messages of 1,000 events: two messages.
    assert prefetch(**{**base, "per_message": 1000.0}) == 2
    # 200 MiB already held: room for 224 more of the largest messages, beside those held.
    assert prefetch(**{**base, "held_messages": 10, "held_events": 10,
                       "held_bytes": 200 * 2**20}) == 10 + 224
    # Over the bound already: nothing more than is held (and never below one).
    assert prefetch(**{**base, "held_messages": 5, "held_bytes": 300 * 2**20}) == 5
    assert prefetch(**{**base, "held_bytes": 300 * 2**20}) == 1
