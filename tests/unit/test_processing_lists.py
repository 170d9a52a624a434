"""Names and marks of the reliable Redis transport: pure functions, no Redis."""

from __future__ import annotations

import json

from worker.redis_reliable import parse_processing_list, processing_list, redelivered

CONSUMER = "0123456789abcdef0123456789abcdef"


def test_a_processing_list_names_its_consumer_and_the_exact_list_it_came_from() -> None:
    for source in ("loyalty.events", "loyalty.admin\x06\x169", "a.b.c"):
        name = processing_list(CONSUMER, source)
        assert parse_processing_list(name) == (CONSUMER, source)


def test_other_keys_are_not_taken_for_processing_lists() -> None:
    for key in ("_loyalty.fetch.alive." + CONSUMER, "_loyalty.fetch.unreadable",
                "loyalty.events", "_loyalty.fetch." + CONSUMER.upper() + ".q",
                "_loyalty.fetch." + CONSUMER + "q"):
        assert parse_processing_list(key) is None


def test_a_message_put_back_is_marked_redelivered_and_otherwise_unchanged() -> None:
    raw = json.dumps({"body": "e30=", "headers": {"id": "x", "retries": 2**62},
                      "properties": {"delivery_tag": "t", "delivery_info": {"exchange": ""}}})
    marked = json.loads(redelivered(raw.encode()))
    assert marked["headers"] == {"id": "x", "retries": 2**62, "redelivered": True}
    assert marked["properties"]["delivery_info"] == {"exchange": "", "redelivered": True}
    assert marked["body"] == "e30="
    assert redelivered(b"\xffnot json") == b"\xffnot json"  # kept as it is, never dropped
