"""Nothing lost, nothing doubled: every failure class, end to end, with real processes."""

from __future__ import annotations

import base64
import json
import os
import pickle
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.e2e.conftest import Env, Worker, wait_for
from tests.e2e.streams import (
    TS,
    Stream,
    balances,
    letters_by_message,
    processed,
    record_outcome,
    send_raw,
    shop,
    sql,
)

pytestmark = pytest.mark.e2e

#: Short timeouts so that re-delivery after a kill takes seconds, not minutes.
FAST = {"visibility_timeout": 12, "task_time_limit": 8, "retry_backoff_max": 3,
        "not_found_backoff": 0.3, "not_found_retries": 12}


class FileTouch:
    """Unpickling this runs `open(path, "w")`: proof that a pickle loader ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def drained(env: Env) -> bool:
    return env.broker.pending() == 0


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_unreadable_messages_are_kept_raw_and_never_deserialized(deploy, broker: str,
                                                                 tmp_path: Path) -> None:
    env = deploy(broker, **FAST)
    worker = env.worker()
    proof = tmp_path / "unpickled"
    evil = pickle.dumps(((FileTouch(str(proof)),), {}, {}))
    signup = "loyalty.events.signup"
    cases = {
        "pickle": (evil, "application/x-python-serialize", {"task": signup}, "binary",
                   "content_disallowed"),
        "yaml": ("!!python/object/apply:os.system ['true']", "application/x-yaml",
                 {"task": signup}, "utf-8", "content_disallowed"),
        "bad-json": ("{not json", "application/json", {"task": signup}, "utf-8",
                     "undecodable_body"),
        "unknown": (json.dumps([[{}], {}, {}]), "application/json", {"task": "loyalty.nope"},
                    "utf-8", "unknown_task"),
        "no-id": (json.dumps([[{}], {}, {}]), "application/json", {"task": signup, "id": None},
                  "utf-8", "malformed_message"),
        "bad-eta": (json.dumps([[{}], {}, {}]), "application/json",
                    {"task": signup, "eta": "yesterday"}, "utf-8", "malformed_message"),
        "not-celery": (json.dumps({"hello": "world"}), "application/json", {"task": signup},
                       "utf-8", "malformed_message"),
    }
    ids = {}
    for name, (body, ctype, headers, encoding, _reason) in cases.items():
        message_id = f"{name}-{uuid.uuid4().hex[:6]}"
        ids[name] = message_id
        full = {"lang": "py", "id": message_id, **headers}
        full = {k: v for k, v in full.items() if v is not None}
        send_raw(env, body, ctype, full, encoding)
    # A message with no task header at all, stored under its correlation id.
    wait_for(lambda: len(letters_by_message(env)) >= len(cases) - 1, 60, "dead letters")
    wait_for(lambda: drained(env), 30, "the queue to drain")
    letters = letters_by_message(env)
    for name, (_body, *_rest, reason) in cases.items():
        if name == "no-id":
            rows = sql(env, "SELECT reason FROM dead_letters WHERE message_id IS NULL")
            assert rows == [(reason,)]
            continue
        assert letters.get(ids[name]) == reason, (name, letters)
    assert not proof.exists(), "a pickle body was deserialized"
    stored = env.cli_json("dlq", "list", "--reason", "content_disallowed")["items"]
    pickled = next(d for d in stored if d["message_id"] == ids["pickle"])
    assert pickled["headers"]["body_encoding"] == "base64"
    assert base64.b64decode(pickled["payload"]) == evil
    assert pickled["headers"]["content_type"] == "application/x-python-serialize"
    # Replay never takes them (they were never read), and never unpickles; they stay pending.
    assert env.cli_json("dlq", "replay", "--all")["items"] == []
    by_id = env.cli_json("dlq", "replay", "--id", str(pickled["id"]))["items"]
    assert [(i["result"], i["reason"]) for i in by_id] == [
        ("skipped", "letters kept as content_disallowed are never replayed; discard them")]
    assert env.cli_json("dlq", "show", str(pickled["id"]))["status"] == "pending"
    assert not proof.exists()
    assert worker.alive()
    env.cli("publish", "signup", "--contact-id", "after-the-storm")
    wait_for(lambda: balances(env).get("after-the-storm") == 100, 30, "a good event after them")


def test_invalid_payloads_are_dead_lettered_at_once_and_never_retried(deploy) -> None:
    env = deploy("redis", **FAST)
    worker = env.worker()
    client = shop(env)
    sent = client.send_task("loyalty.events.order_completed",
                            args=[{"event_id": "e", "contact_id": "c", "order_id": "o",
                                   "total": "-5", "currency": "USD", "occurred_at": TS}],
                            queue="loyalty.events").id
    wait_for(lambda: sent in letters_by_message(env), 30, "the dead letter")
    letter = env.cli_json("dlq", "list")["items"][0]
    assert (letter["reason"], letter["attempts"]) == ("invalid_payload", 1)
    assert "total" in letter["error_detail"]
    # A retry would have been decided, and logged, before the dead letter was.
    wait_for(lambda: any(r.get("msg") == "dead-lettered" and r.get("task_id") == sent
                         for r in worker.logs()), 30, "the dead-lettered line")
    assert not any(r.get("msg") == "not applied yet, retrying" for r in worker.logs())


def test_order_before_signup_is_retried_then_applied(deploy) -> None:
    env = deploy("redis", **FAST)
    worker = env.worker()
    client = shop(env)
    early = client.send_task("loyalty.events.order_completed", args=[{
        "event_id": "early-order", "contact_id": "slow", "order_id": "o-1", "total": "30.00",
        "currency": "USD", "occurred_at": TS}], queue="loyalty.events").id
    wait_for(lambda: any(r.get("msg") == "not applied yet, retrying"
                         and r.get("task_id") == early and r.get("reason") == "account_not_found"
                         for r in worker.logs()), 30, "the order to be tried and retried")
    assert balances(env) == {}
    client.send_task("loyalty.events.signup", args=[{
        "event_id": "late-signup", "contact_id": "slow", "occurred_at": TS}],
        queue="loyalty.events")
    wait_for(lambda: balances(env).get("slow") == 130, 60, "the retried order to apply")
    assert sql(env, "SELECT count(*) FROM dead_letters") == [(0,)]


def test_account_not_found_is_dead_lettered_then_replayed_by_an_operator(deploy) -> None:
    env = deploy("redis", **{**FAST, "not_found_retries": 2})
    env.worker()
    client = shop(env)
    order = {"event_id": "orphan", "contact_id": "ghost", "order_id": "o-9", "total": "12.00",
             "currency": "USD", "occurred_at": TS}
    message_id = client.send_task("loyalty.events.order_completed", args=[order],
                                  queue="loyalty.events").id
    wait_for(lambda: letters_by_message(env).get(message_id) == "account_not_found", 60,
             "the order to be dead-lettered after its retries")
    letter = env.cli_json("dlq", "list", "--reason", "account_not_found")["items"][0]
    shown = env.cli_json("dlq", "show", str(letter["id"]))
    assert json.loads(shown["payload"])[0] == [order]
    assert shown["message_id"] == message_id and shown["headers"]["retries"] == 2

    dry = env.cli("dlq", "replay", "--reason", "account_not_found", "--dry-run", "--json",
                  check=False)
    assert dry.returncode == 1 and json.loads(dry.stdout)["summary"] == {"would_fail": 1}
    env.cli("publish", "signup", "--contact-id", "ghost")
    wait_for(lambda: balances(env).get("ghost") == 100, 30, "the signup")
    dry = env.cli_json("dlq", "replay", "--reason", "account_not_found", "--dry-run")
    assert dry["items"][0]["effect"]["points"] == 12
    assert balances(env)["ghost"] == 100  # the dry run wrote nothing
    done = env.cli_json("dlq", "replay", "--id", str(letter["id"]))
    assert done["summary"] == {"replayed": 1}
    assert balances(env)["ghost"] == 112
    stats = env.cli_json("dlq", "stats")
    assert stats["by_reason"]["account_not_found"] == {"pending": 0, "replayed": 1,
                                                       "discarded": 0}
    again = env.cli_json("dlq", "replay", "--all")
    assert again["items"] == [] and balances(env)["ghost"] == 112
    assert env.cli_json("verify")["ok"]


def test_discard_through_the_cli(deploy) -> None:
    env = deploy("redis", **FAST)
    env.worker()
    message_id = shop(env).send_task("loyalty.events.signup", args=["junk"],
                                     queue="loyalty.events").id
    wait_for(lambda: message_id in letters_by_message(env), 30, "the dead letter")
    letter_id = env.cli_json("dlq", "list")["items"][0]["id"]
    done = env.cli_json("dlq", "discard", str(letter_id), "--why", "producer bug #12",
                        "--actor", "dana")
    assert (done["status"], done["discarded_by"], done["discard_reason"]) == (
        "discarded", "dana", "producer bug #12")
    assert env.cli_json("dlq", "list", "--status", "discarded")["items"][0]["id"] == letter_id
    again = env.cli("dlq", "discard", str(letter_id), "--why", "x", "--actor", "y", check=False)
    assert again.returncode == 1 and "not pending" in again.stderr


def test_scheduled_replay_task(deploy) -> None:
    env = deploy("redis", **{**FAST, "not_found_retries": 0})
    env.worker()
    client = shop(env)
    message_id = client.send_task("loyalty.events.order_completed", args=[{
        "event_id": "sched", "contact_id": "later", "order_id": "o", "total": "7",
        "currency": "USD", "occurred_at": TS}], queue="loyalty.events").id
    wait_for(lambda: message_id in letters_by_message(env), 30, "the dead letter")
    client.send_task("loyalty.events.signup", args=[{"event_id": "s", "contact_id": "later",
                                                     "occurred_at": TS}], queue="loyalty.events")
    wait_for(lambda: balances(env).get("later") == 100, 30, "the signup")
    result = client.send_task("loyalty.deadletters.replay",
                              args=[{"reason": "account_not_found"}],
                              queue="loyalty.admin").get(timeout=60)
    assert result["summary"] == {"replayed": 1}
    assert balances(env)["later"] == 107


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_poison_message_is_dead_lettered_after_bounded_crashes(deploy, broker: str) -> None:
    """A message that kills its worker process every time stops after POISON_DELIVERIES."""
    env = deploy(broker, **{**FAST, "poison_deliveries": 3})
    worker = env.worker()
    env.cli("publish", "signup", "--contact-id", "victim")
    wait_for(lambda: balances(env).get("victim") == 100, 30, "the signup")
    url = env.db_url.replace("postgresql+psycopg://", "postgresql://")
    holder = psycopg.connect(url)
    holder.execute("SELECT 1 FROM accounts WHERE contact_id = 'victim' FOR UPDATE")
    message_id = shop(env).send_task("loyalty.events.order_completed", args=[{
        "event_id": "poison", "contact_id": "victim", "order_id": "p", "total": "5",
        "currency": "USD", "occurred_at": TS}], queue="loyalty.events").id
    killed: set[int] = set()
    watcher = psycopg.connect(url, autocommit=True)
    deadline = time.monotonic() + 90
    try:
        while letters_by_message(env).get(message_id) != "poison":
            assert time.monotonic() < deadline, f"not dead-lettered; killed {len(killed)}"
            rows = watcher.execute(
                "SELECT application_name FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND application_name LIKE 'loyalty:%%'").fetchall()
            for (name,) in rows:
                pid = int(name.split(":")[1])
                if pid not in killed and pid in worker.children():
                    os.kill(pid, signal.SIGKILL)  # the task "crashes" its process
                    killed.add(pid)
            time.sleep(0.1)
    finally:
        holder.rollback()
        holder.close()
        watcher.close()
    assert len(killed) == 3
    assert sql(env, "SELECT crashes FROM message_crashes WHERE message_id = %s",
               message_id) == [(3,)]
    assert worker.alive()
    wait_for(lambda: env.broker.pending() == 0, 30, "no copy of the message left to apply")
    assert balances(env)["victim"] == 100  # never applied
    letter = env.cli_json("dlq", "list", "--reason", "poison")["items"][0]
    assert "crashed its worker process 3 times" in letter["error_detail"]
    # Once the cause is gone (the lock), the operator can replay it.
    assert env.cli_json("dlq", "replay", "--reason", "poison")["summary"] == {"replayed": 1}
    assert balances(env)["victim"] == 105


def sigkill_pool_processes(worker: Worker) -> int:
    """SIGKILL the processes that apply events; their messages must be delivered again."""
    killed = 0
    for pid in worker.children():
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except ProcessLookupError:  # the pool replaced it meanwhile
            pass
    return killed


def redelivered(worker: Worker) -> bool:
    return any(r.get("msg") in ("worker process lost, message will be delivered again",
                                "batch lost with its worker process, requeueing its messages")
               for r in worker.logs())


def pool_processes_blocked(env, worker: Worker) -> list[int]:
    """Pool processes waiting on a row lock, so inside a transaction with messages in hand."""
    rows = sql(env, "SELECT application_name FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND application_name LIKE 'loyalty:%%'")
    children = set(worker.children())
    return [pid for pid in (int(name.split(":")[1]) for (name,) in rows) if pid in children]


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_sigkilled_worker_loses_and_doubles_nothing(deploy, broker: str) -> None:
    # Kills here are not the message's fault: a message caught by several of them must not
    # be taken for poison (its own test is above).
    env = deploy(broker, **{**FAST, "poison_deliveries": 20})
    worker = env.worker(concurrency=2)
    stream = Stream(contacts=40, orders=1000, seed=11)
    stream.publish(env, stream.signups)
    wait_for(lambda: processed(env) >= len(stream.signups), 60, "the signups")
    orders = stream.messages[len(stream.signups):]
    half = len(orders) // 2
    # First, kills at whatever moment the stream is in: some catch a process between two
    # batches, some in the middle of one.
    stream.publish(env, orders[:half])
    for step in range(3):
        wait_for(lambda s=step: processed(env) > len(stream.signups) + 30 * (s + 1), 60,
                 "some orders")
        sigkill_pool_processes(worker)
        time.sleep(0.3)
    # Then a kill that surely catches messages in hand: every account is locked, so the
    # pool processes block inside their transactions, and nothing of the rest can commit.
    url = env.db_url.replace("postgresql+psycopg://", "postgresql://")
    holder = psycopg.connect(url)
    try:
        holder.execute("SELECT 1 FROM accounts FOR UPDATE")
        stream.publish(env, orders[half:])
        wait_for(lambda: pool_processes_blocked(env, worker), 60,
                 "a pool process blocked on a locked account")
        assert sigkill_pool_processes(worker) > 0
        wait_for(lambda: redelivered(worker), 30, "the killed process's messages requeued")
        # The whole worker too, main process included: on Redis its messages wait in its
        # processing lists (worker.redis_reliable) until its heartbeat expires.
        worker.kill()
        assert processed(env) < stream.distinct_events
    finally:
        holder.rollback()
        holder.close()
    worker = env.worker(concurrency=2)
    try:
        wait_for(lambda: processed(env) == stream.distinct_events, 120, "every event")
        wait_for(lambda: drained(env), 60, "the queues to drain")
    finally:
        record_outcome(env, stream)
    assert worker.alive()
    assert balances(env) == stream.expected
    assert env.cli_json("verify")["ok"]


def test_dropped_database_connections_lose_and_double_nothing(deploy) -> None:
    env = deploy("redis", **FAST)
    worker = env.worker(concurrency=2)
    stream = Stream(contacts=30, orders=300, seed=12)
    stream.publish(env)
    name = env.db_url.rsplit("/", 1)[1]
    terminated = 0
    while processed(env) < stream.distinct_events:
        rows = sql(env, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = %s AND application_name LIKE 'loyalty:%%'", name)
        terminated += len(rows)
        time.sleep(0.3)
        assert worker.alive()
    wait_for(lambda: drained(env), 60, "the queues to drain")
    assert terminated > 0
    assert balances(env) == stream.expected
    assert env.cli_json("verify")["ok"]
    assert worker.alive()


def test_reused_ids_with_other_content_are_conflicts_never_applied(deploy) -> None:
    env = deploy("redis", **FAST)
    env.worker()
    client = shop(env)
    env.cli("publish", "signup", "--contact-id", "dup")
    wait_for(lambda: balances(env).get("dup") == 100, 30, "the signup")
    order = {"event_id": "same-id", "contact_id": "dup", "order_id": "o-1", "total": "20.00",
             "currency": "USD", "occurred_at": TS}
    client.send_task("loyalty.events.order_completed", args=[order], queue="loyalty.events")
    wait_for(lambda: balances(env).get("dup") == 120, 30, "the first order")
    other = client.send_task("loyalty.events.order_completed",
                             args=[{**order, "order_id": "o-2", "total": "500.00"}],
                             queue="loyalty.events").id
    wait_for(lambda: letters_by_message(env).get(other) == "idempotency_conflict", 30,
             "the conflicting event to be dead-lettered")
    request = {"request_id": "req-1", "contact_id": "dup", "amount": 5, "description": "d",
               "actor": "ops"}
    first = client.send_task("loyalty.accounts.adjust_points", args=[request],
                             queue="loyalty.admin").get(timeout=30)
    assert first["status"] == "applied"
    conflict = client.send_task("loyalty.accounts.adjust_points",
                                args=[{**request, "amount": 500}], queue="loyalty.admin")
    result = conflict.get(timeout=30)
    assert (result["status"], result["reason"]) == ("rejected", "idempotency_conflict")
    assert letters_by_message(env)[conflict.id] == "idempotency_conflict"
    again = client.send_task("loyalty.accounts.adjust_points", args=[request],
                             queue="loyalty.admin").get(timeout=30)
    assert again == first
    assert balances(env)["dup"] == 125
