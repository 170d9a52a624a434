"""Refunds and activities, end to end: producer -> broker -> real worker -> PostgreSQL -> CLI."""

from __future__ import annotations

from typing import Any

import pytest

from loyalty.publish import Publisher
from loyalty.settings import Settings
from tests.e2e.conftest import Env, wait_for
from tests.e2e.streams import TS, balances, letters_by_message, processed, shop, sql

pytestmark = pytest.mark.e2e

FAST = {"retry_backoff_max": 2, "not_found_backoff": 0.2, "not_found_retries": 1}


def refund(event_id: str, order_id: str, refund_id: str, amount: str,
           currency: str = "USD", contact: str = "c1") -> dict[str, Any]:
    return {"event_id": event_id, "contact_id": contact, "order_id": order_id,
            "refund_id": refund_id, "amount": amount, "currency": currency, "occurred_at": TS}


def send(env: Env, task: str, payload: dict[str, Any]) -> str:
    return str(shop(env).send_task(f"loyalty.events.{task}", args=[payload],
                                   queue="loyalty.events").id)


def points(env: Env, contact: str = "c1") -> dict[str, int]:
    return env.cli_json("accounts", "get", "--contact-id", contact)["points"]


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_refunds_partial_full_sent_twice_and_in_another_currency(deploy, broker: str) -> None:
    env = deploy(broker, **FAST)
    env.worker()
    env.cli("publish", "signup", "--contact-id", "c1")
    env.cli("publish", "order", "--contact-id", "c1", "--order-id", "o1", "--total", "100.00",
            "--currency", "USD")
    wait_for(lambda: balances(env).get("c1") == 200, 60, "the signup and the order")

    first = refund("rf-1", "o1", "r1", "30.00")
    send(env, "order_refunded", first)
    send(env, "order_refunded", first)  # the same event twice
    send(env, "order_refunded", {**first, "event_id": "rf-1-again"})  # same refund, new id
    conflict = send(env, "order_refunded", refund("rf-1-other", "o1", "r1", "31.00"))
    mismatch = send(env, "order_refunded", refund("rf-eur", "o1", "r2", "5.00", "EUR"))
    wait_for(lambda: processed(env) == 4, 60, "the first refund and its re-sends")
    wait_for(lambda: len(letters_by_message(env)) == 2, 60, "the two refused refunds")
    assert letters_by_message(env) == {conflict: "idempotency_conflict",
                                       mismatch: "currency_mismatch"}
    env.cli("publish", "refund", "--contact-id", "c1", "--order-id", "o1", "--refund-id", "r3",
            "--amount", "70.00", "--currency", "USD")
    wait_for(lambda: points(env)["reversed"] == 100, 60, "the rest of the order refunded")
    assert points(env) == {"balance": 100, "earned": 200, "adjusted": 0, "redeemed": 0,
                           "expired": 0, "reversed": 100, "pending": 0}
    reverses = env.cli_json("transactions", "list", "--contact-id", "c1", "--type", "REVERSE")
    assert [(e["amount"], e["source"]["refund_id"], e["source"]["taken"])
            for e in reverses["items"]] == [(-70, "r3", 70), (-30, "r1", 30)]
    assert {e["source"]["shortfall"] for e in reverses["items"]} == {0}
    assert env.cli_json("totals")["points"]["reversed"] == 100
    outcomes = sorted(e["outcome"] for e in env.cli_json(
        "events", "list", "--contact-id", "c1", "--limit", "100")["items"])
    assert outcomes.count("reversed") == 2 and outcomes.count("duplicate_refund") == 1
    assert env.cli_json("verify")["ok"]


def test_a_refund_before_its_order_is_dead_lettered_then_replays_once(deploy) -> None:
    env = deploy("redis", **FAST)
    env.worker()
    env.cli("publish", "signup", "--contact-id", "c1")
    wait_for(lambda: balances(env).get("c1") == 100, 60, "the signup")
    early = send(env, "order_refunded", refund("rf-early", "o9", "r1", "20"))
    wait_for(lambda: letters_by_message(env).get(early) == "order_not_found", 60,
             "the refund to be dead-lettered after its retry")
    env.cli("publish", "order", "--contact-id", "c1", "--order-id", "o9", "--total", "50",
            "--currency", "USD")
    wait_for(lambda: balances(env).get("c1") == 150, 60, "the order")
    done = env.cli_json("dlq", "replay", "--reason", "order_not_found")
    assert done["summary"] == {"replayed": 1}
    assert points(env)["reversed"] == 20 and balances(env)["c1"] == 130
    assert env.cli_json("dlq", "replay", "--all")["items"] == []
    # The producer sends it again as well: it changes nothing.
    send(env, "order_refunded", refund("rf-early", "o9", "r1", "20"))
    wait_for(lambda: env.broker.pending() == 0, 30, "the queue to drain")
    assert points(env)["reversed"] == 20
    assert env.cli_json("verify")["ok"]


def test_activities_with_and_without_a_reference_and_in_bulk(deploy) -> None:
    env = deploy("redis", **FAST)
    env.worker()
    rule = env.cli_json("rules", "create", "--name", "Reviews", "--trigger", "activity",
                        "--activity", "review", "--kind", "fixed", "--points", "25")
    assert (rule["trigger"], rule["activity"], rule["points"]) == ("activity", "review", 25)
    env.cli("publish", "signup", "--contact-id", "c1")
    wait_for(lambda: balances(env).get("c1") == 100, 60, "the signup")
    for _ in range(2):  # one review earns once, whatever its event ids
        env.cli("publish", "activity", "--contact-id", "c1", "--activity", "review",
                "--reference-id", "product-7")
    unknown = send(env, "activity", {"event_id": "a-share", "contact_id": "c1",
                                     "activity": "share", "occurred_at": TS})
    with Publisher(settings=Settings.from_env(env.vars)) as publisher:
        publisher.send_bulk([
            ("activity", {"event_id": "b-1", "contact_id": "c1", "activity": "review",
                          "occurred_at": TS}),
            ("activity", {"event_id": "b-2", "contact_id": "c1", "activity": "review",
                          "occurred_at": TS}),
            ("order.completed", {"event_id": "b-o", "contact_id": "c1", "order_id": "o1",
                                 "total": "40", "currency": "USD", "occurred_at": TS}),
            ("order.refunded", refund("b-r", "o1", "r1", "10")),
        ])
    wait_for(lambda: processed(env) == 7, 60, "the activities, the bulk order and refund")
    wait_for(lambda: letters_by_message(env).get(unknown) == "no_active_rule", 60,
             "the activity without a rule")
    assert points(env) == {"balance": 100 + 25 + 50 + 40 - 10, "earned": 215, "adjusted": 0,
                           "redeemed": 0, "expired": 0, "reversed": 10, "pending": 0}
    earns = env.cli_json("transactions", "list", "--contact-id", "c1", "--type", "EARN")["items"]
    assert sorted(e["source"].get("reference_id") or "-" for e in earns
                  if e["source"]["event_type"] == "activity") == ["-", "-", "product-7"]
    assert sql(env, "SELECT count(*) FROM processed_events WHERE outcome = 'duplicate_activity'"
               ) == [(1,)]
    assert env.cli_json("verify")["ok"]
