"""Producer -> broker -> real worker -> PostgreSQL, read back through the command line.

Every test here runs twice: on Redis and on RabbitMQ, with only the broker URL changed.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from decimal import ROUND_FLOOR, Decimal

import pytest
from celery import Celery

from loyalty.publish import Publisher
from tests.e2e.conftest import Env, Worker, wait_for
from tests.e2e.streams import shop

pytestmark = pytest.mark.e2e
TS = "2026-01-31T12:00:00Z"


def bare_client(env: Env) -> Celery:
    return shop(env)


def processed_count(env: Env) -> int:
    return int(env.cli_json("totals")["accounts"])


def test_thousand_events_with_duplicates_credit_exactly_once(broker_env: Env,
                                                             running_worker: Worker) -> None:
    rng = random.Random(20261125)
    shop = bare_client(broker_env)
    contacts = [f"bulk-{i}" for i in range(200)]
    signups = [{"event_id": f"su-{c}", "contact_id": c, "email": f"{c}@example.com",
                "occurred_at": TS} for c in contacts]
    orders = []
    for i in range(650):
        total = Decimal(rng.randrange(0, 50000)) / 100
        orders.append({"event_id": f"ord-evt-{i}", "contact_id": rng.choice(contacts),
                       "order_id": f"ord-{i}", "total": str(total), "currency": "USD",
                       "occurred_at": TS})
    originals = [("loyalty.events.signup", p) for p in signups] + [
        ("loyalty.events.order_completed", p) for p in orders]
    duplicates = rng.sample(originals, 100)  # 10%: same event_id, same payload
    resent = [("loyalty.events.order_completed", {**p, "event_id": f"resent-{p['event_id']}"})
              for p in rng.sample(orders, 50)]  # 5%: same order, new event_id
    assert len(originals) + len(duplicates) + len(resent) == 1000

    first_wave = [m for m in originals + duplicates if m[0].endswith("signup")]
    second_wave = [m for m in originals + duplicates + resent if m[0].endswith("completed")]
    rng.shuffle(first_wave)
    rng.shuffle(second_wave)
    for name, payload in first_wave:
        shop.send_task(name, args=[payload], queue="loyalty.events")
    wait_for(lambda: processed_count(broker_env) == 200, 120, "200 accounts")
    for name, payload in second_wave:
        shop.send_task(name, args=[payload], queue="loyalty.events")

    expected: dict[str, int] = defaultdict(lambda: 100)
    for p in orders:
        expected[p["contact_id"]] += int(Decimal(p["total"]).to_integral_value(ROUND_FLOOR))
    expected_total = sum(expected[c] for c in contacts)
    wait_for(lambda: broker_env.cli_json("totals")["points"]["earned"] >= expected_total, 180,
             "every order to be credited")
    wait_for(lambda: broker_env.broker.pending() == 0, 60, "the queues to drain")

    listed = broker_env.cli_json("accounts", "list", "--limit", "1000")
    assert listed["next_cursor"] is None
    balances = {a["contact_id"]: a["points"]["balance"] for a in listed["items"]
                if a["contact_id"].startswith("bulk-")}
    assert balances == {c: expected[c] for c in contacts}
    one = broker_env.cli_json("accounts", "get", "--contact-id", contacts[0])
    earns = broker_env.cli_json("transactions", "list", "--contact-id", contacts[0],
                               "--type", "EARN", "--limit", "1000")["items"]
    assert sum(e["amount"] for e in earns) == one["points"]["earned"] == expected[contacts[0]]
    assert len({e["source"]["order_id"] for e in earns}) == len(earns)
    report = broker_env.cli_json("verify")
    assert report["ok"], report["violations"][:5]
    assert broker_env.cli_json("dlq", "list", "--reason", "idempotency_conflict")["items"] == []


def test_concurrent_adjustments_with_one_revision_apply_once(broker_env: Env,
                                                             running_worker: Worker) -> None:
    contact = f"adj-{uuid.uuid4().hex[:6]}"
    broker_env.cli("publish", "signup", "--contact-id", contact)
    account = wait_for(lambda: _account(broker_env, contact), 30, "the signup")
    with Publisher(broker_env.broker_url, broker_env.result_backend) as publisher:
        pending = [publisher.adjust_points(contact_id=contact, amount=7, description="race",
                                           actor="tester", revision=account["revision"])
                   for _ in range(12)]
        results = [p.get(timeout=60) for p in pending]
    applied = [r for r in results if r["status"] == "applied"]
    assert len(applied) == 1
    assert {r["reason"] for r in results if r["status"] == "rejected"} == {"revision_mismatch"}
    after = broker_env.cli_json("accounts", "get", "--contact-id", contact)
    assert after["points"]["balance"] == 107
    assert after["revision"] == account["revision"] + 1


def test_adjust_below_zero_is_rejected_through_the_cli(broker_env: Env,
                                                       running_worker: Worker) -> None:
    contact = f"neg-{uuid.uuid4().hex[:6]}"
    broker_env.cli("publish", "signup", "--contact-id", contact)
    before = wait_for(lambda: _account(broker_env, contact), 30, "the signup")
    done = broker_env.cli("adjust", "--contact-id", contact, "--amount", "-101", "--description",
                         "too much", "--actor", "alice", "--json", check=False)
    assert done.returncode == 1
    assert '"reason": "balance_below_zero"' in done.stdout
    assert broker_env.cli_json("accounts", "get", "--contact-id", contact) == before
    ok = broker_env.cli("adjust", "--contact-id", contact, "--balance", "0", "--description",
                       "reset", "--actor", "alice", "--revision", str(before["revision"]))
    assert ok.stdout.startswith("applied:")
    entry = broker_env.cli_json("transactions", "list", "--contact-id", contact,
                               "--type", "ADJUST")["items"][0]
    assert (entry["amount"], entry["source"]["actor"]) == (-100, "alice")


def test_bad_messages_are_dead_lettered_and_the_worker_survives(broker_env: Env,
                                                               running_worker: Worker) -> None:
    shop = bare_client(broker_env)
    marker = uuid.uuid4().hex[:6]
    sent = {
        "invalid_payload": [
            shop.send_task("loyalty.events.order_completed",
                           args=[{"event_id": f"bad-{marker}", "total": "NaN"}],
                           queue="loyalty.events").id,
            shop.send_task("loyalty.events.signup", args=["not an object"],
                           queue="loyalty.events").id,
            shop.send_task("loyalty.events.signup", args=[{}, {}], queue="loyalty.events").id,
        ],
        "account_not_found": [
            shop.send_task("loyalty.events.order_completed", args=[{
                "event_id": f"ghost-{marker}", "contact_id": f"ghost-{marker}",
                "order_id": "o", "total": "5.00", "currency": "USD", "occurred_at": TS}],
                queue="loyalty.events").id,
        ],
    }
    ids = {i for group in sent.values() for i in group}

    def letters() -> dict[str, str]:
        items = broker_env.cli_json("dlq", "list", "--limit", "1000")["items"]
        return {d["message_id"]: d["reason"] for d in items if d["message_id"] in ids}

    found = wait_for(lambda: len(letters()) == len(ids) and letters(), 30, "dead letters")
    assert found == {i: reason for reason, group in sent.items() for i in group}
    assert running_worker.proc is not None and running_worker.proc.poll() is None
    assert broker_env.cli_json("verify")["ok"]


def test_logs_are_json_and_hide_nothing_sensitive(broker_env: Env, running_worker: Worker) -> None:
    records = running_worker.logs()
    assert any(r.get("msg") in ("applied", "duplicate", "adjustment applied", "batch applied")
               for r in records)
    assert not any(r.get("msg") == "processed" for r in records)
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)


def _account(env: Env, contact: str) -> dict | None:
    done = env.cli("accounts", "get", "--contact-id", contact, "--json", check=False)
    return None if done.returncode else __import__("json").loads(done.stdout)
