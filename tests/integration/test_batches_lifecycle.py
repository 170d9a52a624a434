"""Refunds and activities on the batch path have exactly the effect of applying them one by one.

The batch's promised order: signups, then orders, then activities, then refunds, each
in stream order (loyalty/ledger/earning.py).
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from loyalty.errors import LoyaltyError
from loyalty.ledger import EventOutcome, Ledger
from loyalty.ledger.earning import Event
from schemas.events import ActivityEvent, OrderCompletedEvent, OrderRefundedEvent, SignupEvent
from tests.integration.test_batches import reference, shape  # noqa: F401 (a fixture)
from tests.integration.test_ledger import order, signup
from tests.integration.test_refunds_activities import activity, refund

KINDS = (SignupEvent, OrderCompletedEvent, ActivityEvent, OrderRefundedEvent)


def lifecycle_stream(seed: int, n: int) -> list[Event]:
    """Orders, partial and full refunds, refunds sent twice, under other ids, with other
    amounts, in another currency, before their order, for unknown contacts; activities with
    and without references, repeated, with no rule."""
    rng = random.Random(seed)
    contacts = [f"c{i}" for i in range(8)]
    stream: list[Event] = [signup(c) for c in contacts[:6]]
    orders: list[OrderCompletedEvent] = []
    for k in range(n):
        roll = rng.random()
        contact = rng.choice(contacts)
        if roll < 0.35 or not orders:
            placed = order(rng.choice([*contacts, "ghost"]), f"o{k}",
                           f"{rng.randrange(0, 200)}.{rng.randrange(100):02d}")
            orders.append(placed)
            stream.append(placed)
        elif roll < 0.65:
            of = rng.choice(orders)
            refund_id = f"r{rng.randrange(4)}"
            amount = rng.choice(["1.00", "5.50", "10", "33.33", "199.99"])
            currency = "EUR" if rng.random() < 0.05 else "USD"
            event_id = f"rf-{of.order_id}-{refund_id}-{rng.randrange(2)}"
            stream.append(refund(of.contact_id, of.order_id, refund_id, amount, currency,
                                 event_id=event_id))
        elif roll < 0.70:
            # A refund of an order that comes later (or never).
            stream.append(refund(contact, f"o{k + rng.randrange(1, 20)}", "r0", "2.00",
                                 event_id=f"early-{k}"))
        elif roll < 0.78 and stream:
            stream.append(rng.choice(stream))  # the same event delivered again
        else:
            name = rng.choice(["review", "share", "unknown"])
            ref = rng.choice([None, "p1", "p2"])
            stream.append(activity(rng.choice([*contacts, "ghost"]), name, ref,
                                   event_id=f"a-{k}"))
    return stream


def one_by_one(ledger: Ledger, events: list[Event]) -> list[EventOutcome | LoyaltyError]:
    results: dict[int, EventOutcome | LoyaltyError] = {}
    for kind in KINDS:
        for i, event in enumerate(events):
            if isinstance(event, kind):
                try:
                    results[i] = ledger.apply_events([event])[0]
                except LoyaltyError as exc:
                    results[i] = exc
    return [results[i] for i in range(len(events))]


def state(ledger: Ledger) -> dict[str, Any]:
    found = {}
    for account in ledger.list_accounts(limit=1000)["items"]:
        entries = ledger.list_transactions(account_id=account["id"], limit=1000)["items"]
        found[account["contact_id"]] = (account["points"], account["revision"], sorted(
            (e["type"], e["amount"], e["source"].get("event_id") or "",
             e["source"].get("refund_id") or "", e["source"].get("order_id") or "")
            for e in entries))
    return found


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_refunds_and_activities_in_batches_equal_one_by_one(ledger: Ledger, reference: Ledger,  # noqa: F811
                                                            seed: int) -> None:
    for target in (ledger, reference):
        target.create_rule(name="Reviews", trigger="activity", kind="fixed", points=25,
                           money_amount=None, currency=None, activity="review")
        target.create_rule(name="Shares", trigger="activity", kind="fixed", points=3,
                           money_amount=None, currency=None, activity="share")
    stream = lifecycle_stream(seed, 400)
    seen: set[str] = set()
    for start in range(0, len(stream), 60):
        batch = stream[start:start + 60]
        got = ledger.apply_events(batch)
        assert [shape(r) for r in got] == [shape(r) for r in one_by_one(reference, batch)]
        seen |= {r.outcome if isinstance(r, EventOutcome) else r.reason for r in got}
    assert {"reversed", "refund_recorded", "duplicate_refund", "duplicate_activity", "earned",
            "order_not_found", "currency_mismatch", "idempotency_conflict", "no_active_rule",
            "account_not_found"} <= seen, seen
    assert state(ledger) == state(reference)
    assert ledger.verify()["ok"], ledger.verify()["violations"]
    assert reference.verify()["ok"]


def test_concurrent_batches_of_orders_and_refunds_add_up(db_url: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from loyalty import db

    ledger = Ledger(db.get_engine(db_url, pool_size=8))
    contacts = [f"c{i}" for i in range(10)]
    ledger.apply_events([signup(c) for c in contacts])
    rng = random.Random(11)
    placed = [order(rng.choice(contacts), f"o{k}", "10.00") for k in range(400)]
    ledger.apply_events(placed[:200])
    refunds = [refund(o.contact_id, o.order_id, "r1", "5.00") for o in placed[:200]]
    events: list[Event] = [*placed[200:], *refunds]
    batches = [rng.sample(events, 150) for _ in range(12)]  # every event in several batches
    with ThreadPoolExecutor(4) as pool:
        results = [r for batch in pool.map(ledger.apply_events, batches) for r in batch]
    assert not [r for r in results if isinstance(r, LoyaltyError)]
    applied = {r.event_id for r in results if isinstance(r, EventOutcome) and not r.duplicate}
    orders_in = len([e for e in applied if e.startswith("order-")])
    refunds_in = len([e for e in applied if e.startswith("refund-")])
    totals = ledger.totals()["points"]
    assert totals["earned"] == 100 * len(contacts) + 10 * (200 + orders_in)
    assert totals["reversed"] == 5 * refunds_in
    assert ledger.verify()["ok"]
