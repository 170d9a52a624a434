"""The whole point lifecycle through the broker, against a model the test keeps on its own.

Orders earn, refunds take back (some before their order, some twice, some with a
shortfall), staff redeem rewards (some beyond the balance) and give redemptions back
(some twice). Every field of every account must equal what the stream gives.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from typing import Any

import pytest

from tests.e2e.conftest import Env, wait_for
from tests.e2e.streams import shop

pytestmark = pytest.mark.e2e
TS = "2026-01-31T12:00:00Z"


def _floor(value: Decimal) -> int:
    return int(value.to_integral_value(ROUND_FLOOR))


@dataclass
class Order:
    payload: dict[str, Any]
    total: Decimal
    points: int
    refunded: Decimal = Decimal(0)  # money refunded so far, distinct refunds only
    taken: int = 0  # points taken back so far

    def due_after(self, amount: Decimal) -> int:
        """Points this refund takes back: min(E, floor(E x R / T)) minus what earlier took."""
        self.refunded += amount
        whole = min(self.points, _floor(self.points * self.refunded / self.total))
        due = whole - self.taken
        self.taken = whole
        return due


@dataclass
class Model:
    """What each account must hold, computed from the stream alone."""

    earned: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    redeemed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    reversed: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def balance(self, contact: str) -> int:
        return self.earned[contact] - self.redeemed[contact] - self.reversed[contact]

    def points(self, contact: str) -> dict[str, int]:
        return {"balance": self.balance(contact), "earned": self.earned[contact], "adjusted": 0,
                "redeemed": self.redeemed[contact], "expired": 0,
                "reversed": self.reversed[contact], "pending": 0}


def _refund(order: Order, refund_id: str, amount: Decimal, event_id: str) -> dict[str, Any]:
    p = order.payload
    return {"event_id": event_id, "contact_id": p["contact_id"], "order_id": p["order_id"],
            "refund_id": refund_id, "amount": str(amount), "currency": p["currency"],
            "occurred_at": TS}


def _send_events(env: Env, name: str, payloads: list[dict[str, Any]]) -> None:
    client = shop(env)
    for payload in payloads:
        client.send_task(name, args=[payload], queue="loyalty.events")


def _admin(env: Env, name: str, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    client = shop(env)
    pending = [client.send_task(name, args=[p], queue="loyalty.admin") for p in payloads]
    return [p.get(timeout=120) for p in pending]


def _accounts(env: Env, prefix: str) -> dict[str, dict[str, Any]]:
    listed = env.cli_json("accounts", "list", "--limit", "1000")
    return {a["contact_id"]: a for a in listed["items"] if a["contact_id"].startswith(prefix)}


def _reversed_total(env: Env) -> int:
    return int(env.cli_json("totals")["points"]["reversed"])


def test_orders_refunds_redemptions_and_their_refunds_add_up(deploy: Any) -> None:
    env = deploy("redis", not_found_retries=1, not_found_backoff=0.2)
    env.worker(concurrency=2)
    rng = random.Random(20261128)
    prefix = f"lc-{uuid.uuid4().hex[:6]}-"
    contacts = [f"{prefix}c{i}" for i in range(100)]
    model = Model()

    # 1. Signups: 100 points each by the default signup rule.
    _send_events(env, "loyalty.events.signup",
                 [{"event_id": f"{prefix}su-{c}", "contact_id": c, "occurred_at": TS}
                  for c in contacts])
    for c in contacts:
        model.earned[c] += 100
    wait_for(lambda: len(_accounts(env, prefix)) == 100, 120, "100 accounts")

    orders: list[Order] = []
    for i in range(1000):
        total = Decimal(rng.randrange(1, 20000)) / 100
        payload = {"event_id": f"{prefix}oe-{i}", "contact_id": rng.choice(contacts),
                   "order_id": f"{prefix}o-{i}", "total": str(total), "currency": "USD",
                   "occurred_at": TS}
        orders.append(Order(payload, total, _floor(total)))
        model.earned[payload["contact_id"]] += _floor(total)

    # 2. Refunds sent before their orders: retried, then dead-lettered order_not_found.
    early = rng.sample(orders, 20)
    early_refunds = []
    for n, order in enumerate(early):
        amount = (order.total / 2).quantize(Decimal("0.01"), ROUND_FLOOR) or order.total
        early_refunds.append((order, _refund(order, f"r-early-{n}", amount,
                                             f"{prefix}re-early-{n}"), amount))
    _send_events(env, "loyalty.events.order_refunded", [r for _, r, _ in early_refunds])

    def early_letters() -> int:
        items = env.cli_json("dlq", "list", "--reason", "order_not_found", "--limit", "100")
        return len(items["items"])

    wait_for(lambda: early_letters() == 20, 120, "20 refunds dead-lettered order_not_found")

    # 3. The orders, 10% of them sent twice.
    payloads = [o.payload for o in orders]
    _send_events(env, "loyalty.events.order_completed",
                 payloads + rng.sample(payloads, 100))
    earned_total = sum(model.earned.values())
    wait_for(lambda: env.cli_json("totals")["points"]["earned"] == earned_total, 240,
             "every order to earn")

    # 4. The early refunds replay once their orders are there, exactly once.
    replayed = env.cli_json("dlq", "replay", "--reason", "order_not_found")
    assert replayed["summary"].get("replayed") == 20, replayed["summary"]
    for order, payload, amount in early_refunds:
        model.reversed[payload["contact_id"]] += order.due_after(amount)
    again = env.cli_json("dlq", "replay", "--reason", "order_not_found")
    assert again["items"] == []
    _send_events(env, "loyalty.events.order_refunded", [early_refunds[0][1]])  # a duplicate

    # 5. 280 more refunds, partial and full; 30 sent twice, 20 re-sent under a new event id.
    refunds = []
    candidates = [o for o in orders if o not in early]
    while len(refunds) < 280:
        order = rng.choice(candidates)
        left = order.total - order.refunded
        if left <= 0:
            continue
        full = rng.random() < 0.4
        amount = left if full else (left * Decimal(rng.randrange(1, 100)) / 100).quantize(
            Decimal("0.01"), ROUND_FLOOR)
        if amount <= 0:
            continue
        n = len(refunds)
        refunds.append(_refund(order, f"r-{n}", amount, f"{prefix}re-{n}"))
        model.reversed[order.payload["contact_id"]] += order.due_after(amount)
    twice = rng.sample(refunds, 30)
    resent = [{**r, "event_id": r["event_id"] + "-resent"} for r in rng.sample(refunds, 20)]
    stream = refunds + twice + resent
    rng.shuffle(stream)
    _send_events(env, "loyalty.events.order_refunded", stream)
    reversed_total = sum(model.reversed.values())
    wait_for(lambda: _reversed_total(env) == reversed_total, 240, "every refund to apply")
    wait_for(lambda: env.broker.pending() == 0, 60, "the queues to drain")
    assert {c: a["points"] for c, a in _accounts(env, prefix).items()} == {
        c: model.points(c) for c in contacts}

    # 6. 200 redemptions, two rounds of one per account so each account's are in order.
    reward = env.cli_json("rewards", "create", "--name", "Coffee", "--kind", "custom",
                          "--cost-in-points", "150")
    redeemed_entries: list[tuple[str, int, str]] = []
    rejected = 0
    for round_ in range(2):
        asks = []
        for n, contact in enumerate(contacts):
            request: dict[str, Any] = {"request_id": f"{prefix}rd-{round_}-{n}",
                                       "contact_id": contact, "actor": "till-7"}
            if rng.random() < 0.5:
                request.update(reward_id=reward["id"], count=rng.randrange(1, 4))
                cost = 150 * request["count"]
            else:
                # Sometimes exactly the balance, sometimes one point more than it holds.
                cost = rng.choice([rng.randrange(1, 2000), max(1, model.balance(contact)),
                                   model.balance(contact) + 1])
                request["amount"] = cost
            asks.append((contact, cost, request))
        results = _admin(env, "loyalty.accounts.redeem_points", [r for _, _, r in asks])
        for (contact, cost, _request), result in zip(asks, results, strict=True):
            if cost <= model.balance(contact):
                assert result["status"] == "applied", result
                assert result["redemption"]["points"] == cost
                assert result["redemption"]["status"] == "ISSUED"
                model.redeemed[contact] += cost
                redeemed_entries.append((contact, cost, result["transaction_id"]))
            else:
                assert (result["status"], result["reason"]) == ("rejected",
                                                                "insufficient_balance"), result
                rejected += 1
            assert result["account"]["points"]["balance"] == model.balance(contact)
    assert rejected > 0 and len(redeemed_entries) > 100

    # 7. 50 redemptions given back; 10 asked again with the same request, 10 with a new one.
    back = rng.sample(redeemed_entries, 50)
    asks = [{"request_id": f"{prefix}rf-{n}", "transaction_id": tx, "actor": "till-7"}
            for n, (_c, _p, tx) in enumerate(back)]
    first = _admin(env, "loyalty.accounts.refund_transaction", asks)
    assert {r["status"] for r in first} == {"applied"}, first[:3]
    for contact, cost, _tx in back:
        model.redeemed[contact] -= cost
    same = _admin(env, "loyalty.accounts.refund_transaction", asks[:10])
    assert [r["transaction_id"] for r in same] == [r["transaction_id"] for r in first[:10]]
    other = _admin(env, "loyalty.accounts.refund_transaction",
                   [{**a, "request_id": a["request_id"] + "-again"} for a in asks[10:20]])
    assert {(r["status"], r["reason"]) for r in other} == {("rejected", "already_refunded")}

    # 8. Full refunds after the points were spent: take what the balance holds.
    late: list[dict[str, Any]] = []
    dues: dict[str, int] = defaultdict(int)
    for order in rng.sample([o for o in candidates if o.total > o.refunded], 20):
        amount = order.total - order.refunded
        n = len(late)
        late.append(_refund(order, f"r-late-{n}", amount, f"{prefix}re-late-{n}"))
        dues[order.payload["contact_id"]] += order.due_after(amount)
    _send_events(env, "loyalty.events.order_refunded", late)
    for contact, due in dues.items():
        model.reversed[contact] += min(due, model.balance(contact))
    reversed_total = sum(model.reversed.values())
    wait_for(lambda: _reversed_total(env) == reversed_total, 120, "the late refunds")
    wait_for(lambda: env.broker.pending() == 0, 60, "the queues to drain")

    accounts = _accounts(env, prefix)
    assert {c: a["points"] for c, a in accounts.items()} == {c: model.points(c) for c in contacts}
    for contact in dues:
        entries = env.cli_json("transactions", "list", "--contact-id", contact, "--type",
                               "REVERSE", "--limit", "1000")["items"]
        for entry in entries:
            source = entry["source"]
            assert source["taken"] + source["shortfall"] == source["due"]
            assert -entry["amount"] == source["taken"]
    report = env.cli_json("verify")
    assert report["ok"], report["violations"][:5]
    letters = env.cli_json("dlq", "list", "--limit", "100")["items"]
    assert [x for x in letters if x["status"] == "pending"] == []
