"""Time-ordered ids (issue 14): what the ledger keys its entries by, and the event ids the
producer helper makes up, land on the right-hand edge of their indexes."""

from __future__ import annotations

import time
import uuid

from loyalty.ids import uuid7
from loyalty.ledger.entries import entry_id
from loyalty.publish import Publisher


def test_uuid7_is_rfc_9562_and_grows_with_time() -> None:
    first = uuid7()
    time.sleep(0.002)
    second = uuid7()
    for value in (first, second):
        assert value.version == 7
        assert value.variant == uuid.RFC_4122
        assert abs((value.int >> 80) - time.time_ns() // 1_000_000) < 5_000
    assert first < second
    assert entry_id().version == 7


def test_the_producer_helper_makes_time_ordered_event_ids() -> None:
    """kombu's in-memory transport: the helper's payloads, as they would be sent."""
    with Publisher("memory://") as publisher:
        sent = [publisher.order_completed(contact_id="c-1", order_id=f"o-{i}", total="10",
                                          currency="USD")["payload"]["event_id"]
                for i in range(3)]
        given = publisher.signup(contact_id="c-1", event_id="evt-1")["payload"]["event_id"]
    ids = [uuid.UUID(x) for x in sent]
    assert {i.version for i in ids} == {7}
    # Ordered by their millisecond (random bits order ids made within one).
    assert [i.int >> 80 for i in ids] == sorted(i.int >> 80 for i in ids)
    assert given == "evt-1"
