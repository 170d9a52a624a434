"""A mixed, hostile stream while workers and connections are killed, on both brokers."""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import time
import uuid
from pathlib import Path

import pytest

from tests.e2e.conftest import Env, wait_for
from tests.e2e.streams import TS, Stream, balances, letters_by_message, processed, send_raw, shop, sql
from tests.e2e.test_failures import FAST, FileTouch

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_chaos(deploy, broker: str, tmp_path: Path) -> None:
    env: Env = deploy(broker, **{**FAST, "not_found_retries": 1, "poison_deliveries": 6})
    rng = random.Random(99)
    workers = [env.worker(concurrency=2, name="a"), env.worker(concurrency=1, name="b")]
    stream = Stream(contacts=40, orders=500, seed=31)
    proof = tmp_path / "unpickled"

    # Contacts whose signups arrive only after everything else: their orders are
    # dead-lettered as account_not_found and replayed at the end.
    late = set(rng.sample(sorted(stream.expected), 5))
    early_signups = [m for m in stream.signups if m[1]["contact_id"] not in late]
    late_signups = [m for m in stream.signups if m[1]["contact_id"] in late]
    rest = stream.messages[len(stream.signups):]
    late_order_events = {p["event_id"] for _n, p in rest if p["contact_id"] in late}

    client = shop(env)
    bad: dict[str, str] = {}
    for i in range(15):
        bad[client.send_task("loyalty.events.order_completed",
                             args=[{"event_id": f"bad-{i}", "total": "NaN"}],
                             queue="loyalty.events").id] = "invalid_payload"
    for i in range(5):
        message_id = f"pickle-{i}-{uuid.uuid4().hex[:4]}"
        send_raw(env, pickle.dumps(((FileTouch(str(proof)),), {}, {})),
                 "application/x-python-serialize",
                 {"task": "loyalty.events.signup", "id": message_id, "lang": "py"}, "binary")
        bad[message_id] = "content_disallowed"
        message_id = f"unknown-{i}-{uuid.uuid4().hex[:4]}"
        send_raw(env, json.dumps([[{}], {}, {}]), "application/json",
                 {"task": "loyalty.events.refund", "id": message_id, "lang": "py"})
        bad[message_id] = "unknown_task"

    stream.publish(env, early_signups)
    # With only one not-found retry, an order must not overtake its signup by chance.
    wait_for(lambda: processed(env) >= len(early_signups), 60, "the early signups")
    mixed = list(rest)
    rng.shuffle(mixed)
    third = len(mixed) // 3
    stream.publish(env, mixed[:third])

    # Chaos: kill pool processes, cut database connections, kill a whole worker.
    name = env.db_url.rsplit("/", 1)[1]
    for _ in range(4):
        for worker in workers:
            children = worker.children() if worker.alive() else []
            if children:
                os.kill(rng.choice(children), signal.SIGKILL)
        sql(env, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                 " AND application_name LIKE 'loyalty:%%'", name)
        time.sleep(0.7)
    stream.publish(env, mixed[third:2 * third])
    workers[1].kill()  # SIGKILL, main process included
    stream.publish(env, mixed[2 * third:])
    workers.append(env.worker(concurrency=1, name="c"))
    for _ in range(3):
        sql(env, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                 " AND application_name LIKE 'loyalty:%%'", name)
        time.sleep(1)

    applicable = stream.distinct_events - len(late_signups) - len(late_order_events)
    try:
        wait_for(lambda: processed(env) == applicable, 240, "every applicable event")
    except AssertionError:
        print("processed", processed(env), "of", applicable, "pending", env.broker.pending())
        print(sql(env, "SELECT reason, count(*) FROM dead_letters GROUP BY reason"))
        for worker in env.workers:
            for line in worker.log.read_text().splitlines():
                if '"level": "error"' in line or '"level": "critical"' in line or "Traceback" in line:
                    print(worker.name, line[:400])
        raise
    wait_for(lambda: env.broker.pending() == 0, 120, "the queues to drain")
    letters = letters_by_message(env)
    assert {m: letters.get(m) for m in bad} == bad
    late_letters = sql(env, "SELECT payload FROM dead_letters WHERE reason = 'account_not_found'")
    assert {json.loads(p)[0][0]["event_id"] for (p,) in late_letters} == late_order_events
    assert not proof.exists()
    assert env.cli_json("verify")["ok"]
    assert all(balances(env)[c] == stream.expected[c] for c in stream.expected if c not in late)

    stream.publish(env, late_signups)
    wait_for(lambda: all(balances(env).get(c) == 100 for c in late), 60, "the late signups")
    replayed = env.cli_json("dlq", "replay", "--reason", "account_not_found")
    assert set(replayed["summary"]) == {"replayed"}
    assert balances(env) == stream.expected
    assert env.cli_json("verify")["ok"]
    assert env.cli_json("totals")["points"]["earned"] == sum(stream.expected.values())
    assert TS  # the stream's timestamps are the shared constant
