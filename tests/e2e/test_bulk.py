"""Bulk messages through real workers: each event keeps its own idempotency and dead-lettering."""

from __future__ import annotations

import time

import psycopg
import pytest
import redis

from loyalty.publish import Publisher
from loyalty.settings import Settings
from tests.e2e.conftest import rabbitmqctl, wait_for
from tests.e2e.streams import TS, balances, letters_by_message, processed, shop, sql
from tests.e2e.test_failures import FAST, pool_processes_blocked

pytestmark = pytest.mark.e2e


def order(contact: str, order_id: str, total: str, event_id: str | None = None) -> dict:
    return {"event_id": event_id or f"e-{order_id}", "contact_id": contact, "order_id": order_id,
            "total": total, "currency": "USD", "occurred_at": TS}


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
@pytest.mark.parametrize("batching", ["on", "off"])
def test_bulk_message_applies_each_event_on_its_own(deploy, broker: str, batching: str) -> None:
    env = deploy(broker, **FAST, **({"batch_size": 1} if batching == "off" else {}))
    env.worker(concurrency=2)
    signups = [("signup", {"event_id": f"s-{c}", "contact_id": c, "occurred_at": TS})
               for c in ("a", "b")]
    good = [("order.completed", order("a" if k % 2 else "b", f"o{k}", f"{k}.00"))
            for k in range(1, 201)]
    bad = {"event_id": "bad", "contact_id": "a", "order_id": "x", "total": "-1",
           "currency": "USD", "occurred_at": TS}
    conflict = order("a", "other", "9.00", event_id="e-o1")  # e-o1 with other content
    with Publisher(settings=Settings.from_env(env.vars)) as publisher:
        ids = publisher.send_bulk([*signups, *good], per_message=150)
        assert len(ids) == 2
        # The same events again (a producer's re-send), plus a bad one and a conflict,
        # sent raw because the helper would refuse the bad one before sending.
        raw = shop(env).send_task("loyalty.events.bulk", args=[{"events": [
            *({"type": t, "payload": p} for t, p in good[:50]),
            {"type": "order.completed", "payload": bad},
            {"type": "refund", "payload": {}},
            {"type": "order.completed", "payload": conflict},
        ]}], queue="loyalty.events").id
    wait_for(lambda: processed(env) == 2 + 200, 120, "every good event")
    wait_for(lambda: len(letters_by_message(env)) == 3, 60, "the three bad events")
    expected_a = 100 + sum(k for k in range(1, 201) if k % 2)
    expected_b = 100 + sum(k for k in range(1, 201) if not k % 2)
    assert balances(env) == {"a": expected_a, "b": expected_b}
    assert letters_by_message(env) == {f"{raw}#50": "invalid_payload",
                                       f"{raw}#51": "invalid_payload",
                                       f"{raw}#52": "idempotency_conflict"}
    # A bad event is stored as its own single-event task, so it can be fixed and replayed.
    [(task,)] = sql(env, "SELECT task_name FROM dead_letters WHERE message_id = %s", f"{raw}#52")
    assert task == "loyalty.events.order_completed"
    assert env.cli_json("verify")["ok"]


def test_invalid_bulk_envelope_is_dead_lettered_whole(deploy) -> None:
    env = deploy("redis", **FAST)
    env.worker()
    message_id = shop(env).send_task("loyalty.events.bulk", args=[{"events": "nope"}],
                                     queue="loyalty.events").id
    wait_for(lambda: message_id in letters_by_message(env), 60, "the letter")
    assert letters_by_message(env)[message_id] == "invalid_payload"


def unacknowledged(env) -> int:
    if env.broker.kind == "redis":
        client = redis.Redis.from_url(env.broker.url)
        try:
            # Held in the worker's processing lists (worker.redis_reliable), or recorded
            # the stock way.
            held = sum(client.llen(key) for key in client.scan_iter("_loyalty.fetch.*")
                       if client.type(key) == b"list" and key != b"_loyalty.fetch.unreadable")
            return int(held + client.hlen("unacked"))
        finally:
            client.close()
    out = rabbitmqctl("list_queues", "-p", str(env.broker.vhost), "--no-table-headers",
                      "name", "messages_unacknowledged")
    return sum(int(line.split()[1]) for line in out.splitlines() if line.strip())


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_bulk_messages_are_prefetched_by_their_events(deploy, broker: str) -> None:
    """The prefetch counts messages; 2,000 bulk messages would be two million events."""
    env = deploy(broker)
    worker = env.worker(concurrency=2)
    contacts = [f"c{n}" for n in range(40)]
    with Publisher(settings=Settings.from_env(env.vars)) as publisher:
        publisher.send_bulk(("signup", {"event_id": f"s-{c}", "contact_id": c,
                                        "occurred_at": TS}) for c in contacts)
        wait_for(lambda: processed(env) == len(contacts), 60, "the signups")
        url = env.db_url.replace("postgresql+psycopg://", "postgresql://")
        holder = psycopg.connect(url)
        try:
            # Every account locked: the batches wait, so what the worker holds stays put.
            holder.execute("SELECT 1 FROM accounts FOR UPDATE")
            publisher.send_bulk((("order.completed", order(contacts[k % 40], f"o{k}", "1.00"))
                                 for k in range(20_000)), per_message=500)
            wait_for(lambda: pool_processes_blocked(env, worker), 60, "a blocked batch")
            time.sleep(1)
            held = unacknowledged(env)
        finally:
            holder.rollback()
            holder.close()
    # At most the starting prefetch (4 per process) before the first bulk message is
    # seen; after it, about two batches of events per process (4 messages of 500).
    assert 1 <= held <= 8, f"the worker holds {held} bulk messages of 500 events"
    wait_for(lambda: processed(env) == len(contacts) + 20_000, 120, "every order")
    assert balances(env) == {c: 100 + 500 for c in contacts}
    assert env.cli_json("verify")["ok"]
