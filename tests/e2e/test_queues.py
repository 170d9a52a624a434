"""Admin tasks only from `loyalty.admin`, events only from `loyalty.events` (issue 7).

Each attack is sent the way it was found: a plain Celery client with nothing but the
broker URL, publishing a staff task to the events queue.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from typing import Any

import pytest
import redis

from tests.e2e.conftest import Env, Worker, wait_for
from tests.e2e.streams import TS, balances, letters_by_message, send_raw, shop, sql

pytestmark = pytest.mark.e2e


def _letter(env: Env, message_id: str) -> dict[str, Any]:
    rows = sql(env, "SELECT reason, task_name, error_detail, status FROM dead_letters"
                    " WHERE message_id = %s", message_id)
    assert len(rows) == 1, rows
    return dict(zip(("reason", "task_name", "error_detail", "status"), rows[0], strict=True))


def test_tasks_run_only_from_their_own_queue(broker_env: Env, running_worker: Worker) -> None:
    env = broker_env
    contact = f"q-{uuid.uuid4().hex[:6]}"
    env.cli("publish", "signup", "--contact-id", contact)
    wait_for(lambda: balances(env).get(contact) == 100, 30, "the signup")
    client = shop(env)
    grant = client.send_task("loyalty.accounts.adjust_points", args=[{
        "request_id": f"r-{contact}", "contact_id": contact, "balance": 999_999_999,
        "description": "free points", "actor": "a shop's producer"}], queue="loyalty.events").id
    replay = client.send_task("loyalty.deadletters.replay", args=[{"all": True}],
                              queue="loyalty.events").id
    event = client.send_task("loyalty.events.order_completed", args=[{
        "event_id": f"e-{contact}", "contact_id": contact, "order_id": f"o-{contact}",
        "total": "10.00", "currency": "USD", "occurred_at": TS}], queue="loyalty.admin").id
    wait_for(lambda: {grant, replay, event} <= set(letters_by_message(env)), 30,
             "the dead letters")
    for message_id, task, queue in ((grant, "loyalty.accounts.adjust_points", "loyalty.admin"),
                                    (replay, "loyalty.deadletters.replay", "loyalty.admin"),
                                    (event, "loyalty.events.order_completed", "loyalty.events")):
        letter = _letter(env, message_id)
        assert (letter["reason"], letter["task_name"]) == ("wrong_queue", task)
        assert f"runs only from queue {queue}" in letter["error_detail"]
    assert balances(env)[contact] == 100  # nothing was granted, nothing earned
    # Kept, but never replayed, by any selection: only discarded.
    assert env.cli_json("dlq", "replay", "--reason", "wrong_queue")["items"] == []
    kept = {_id(env, m) for m in (grant, replay, event)}
    assert not kept & {i["id"] for i in env.cli_json("dlq", "replay", "--all")["items"]}
    assert not kept & {i["id"] for i in env.cli_json("dlq", "replay", "--since", "1h")["items"]}
    by_id = env.cli("dlq", "replay", "--id", str(_id(env, grant)), "--json", check=False)
    item = json.loads(by_id.stdout)["items"][0]
    assert item["result"] == "skipped"
    assert "never replayed" in item["reason"]
    assert balances(env)[contact] == 100
    assert _letter(env, grant)["status"] == "pending"
    env.cli("dlq", "discard", str(_id(env, grant)), "--why", "an attack", "--actor", "ops")
    # The same tasks from their own queues still work.
    applied = env.cli_json("adjust", "--contact-id", contact, "--amount", "5",
                           "--description", "real", "--actor", "ops")
    assert applied["status"] == "applied"


def _id(env: Env, message_id: str) -> int:
    return int(sql(env, "SELECT id FROM dead_letters WHERE message_id = %s", message_id)[0][0])


def test_redis_message_claiming_another_queue_is_kept(deploy) -> None:
    """On Redis, a message's routing key is what its producer wrote; kombu restores an
    unacknowledged message by it. One on loyalty.events that claims loyalty.admin could
    move itself there at the next restart: it is kept as wrong_queue at once."""
    env: Env = deploy("redis")
    env.worker()
    message_id = f"claim-{uuid.uuid4().hex[:6]}"
    body = json.dumps([[{"event_id": message_id, "contact_id": "claimer", "occurred_at": TS}],
                       {}, {}])
    client = redis.Redis.from_url(env.broker_url)
    try:
        client.lpush("loyalty.events", json.dumps({
            "body": base64.b64encode(body.encode()).decode(),
            "content-encoding": "utf-8", "content-type": "application/json",
            "headers": {"lang": "py", "task": "loyalty.events.signup", "id": message_id},
            "properties": {"delivery_tag": message_id, "body_encoding": "base64",
                           "delivery_mode": 2, "priority": 0, "correlation_id": message_id,
                           "delivery_info": {"exchange": "loyalty.admin",
                                             "routing_key": "loyalty.admin"}}}))
    finally:
        client.close()
    wait_for(lambda: message_id in letters_by_message(env), 30, "the dead letter")
    letter = _letter(env, message_id)
    assert letter["reason"] == "wrong_queue"
    assert "claims routing key 'loyalty.admin'" in letter["error_detail"]
    assert "claimer" not in balances(env)


def test_raw_admin_message_on_the_events_queue_is_kept(broker_env: Env,
                                                       running_worker: Worker) -> None:
    """The same through a bare kombu producer, as a non-Celery client would."""
    env = broker_env
    message_id = f"raw-{uuid.uuid4().hex[:6]}"
    body = json.dumps([[{"request_id": message_id, "contact_id": "nobody", "amount": 5,
                         "description": "x", "actor": "y"}], {}, {}])
    send_raw(env, body, "application/json", {"lang": "py", "id": message_id,
                                              "task": "loyalty.accounts.adjust_points"})
    wait_for(lambda: message_id in letters_by_message(env), 30, "the dead letter")
    assert _letter(env, message_id)["reason"] == "wrong_queue"


def test_oversized_message_is_kept_in_part_and_never_decoded(broker_env: Env,
                                                             running_worker: Worker) -> None:
    """Finding 9: a 1 MB body is not read. The letter keeps its size, its SHA-256 and its
    first 64 KiB; `dlq show` prints a part of that unless given --full."""
    env = broker_env
    message_id = f"big-{uuid.uuid4().hex[:6]}"
    body = json.dumps([[{"event_id": message_id, "contact_id": "big", "occurred_at": TS,
                         "name": "x" * 1_000_000}], {}, {}])
    send_raw(env, body, "application/json", {"lang": "py", "id": message_id,
                                              "task": "loyalty.events.signup"})
    wait_for(lambda: message_id in letters_by_message(env), 30, "the dead letter")
    letter = _letter(env, message_id)
    assert letter["reason"] == "message_too_large"
    assert f"the body is {len(body)} bytes; at most 262144" in letter["error_detail"]
    letter_id = _id(env, message_id)
    shown = env.cli_json("dlq", "show", str(letter_id))
    assert len(shown["payload"]) == 4096
    assert shown["payload_truncated"]["total_chars"] == 64 * 1024
    headers = shown["headers"]
    assert headers["body_bytes"] == len(body)
    assert headers["body_sha256"] == hashlib.sha256(body.encode()).hexdigest()
    full = json.loads(env.cli("dlq", "show", str(letter_id), "--full", "--json").stdout)
    assert full["payload"] == body[:64 * 1024]
    assert "payload_truncated" not in full
    assert "big" not in balances(env)
    # Never replayed: it was never read.
    assert letter_id not in {i["id"] for i in env.cli_json("dlq", "replay", "--all")["items"]}
