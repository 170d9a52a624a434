"""Quorum queues (LOYALTY_QUEUE_TYPE=quorum) on RabbitMQ, with a plain Celery producer."""

from __future__ import annotations

import time

import pytest
from amqp.exceptions import PreconditionFailed
from celery import Celery
from kombu.exceptions import OperationalError

from tests.e2e.conftest import Env, rabbitmqctl, wait_for
from tests.e2e.streams import TS, Stream, balances, processed
from tests.e2e.test_failures import FAST

pytestmark = pytest.mark.e2e


def producer(env: Env, quorum: bool) -> Celery:
    """A shop's Celery client: with quorum queues it must say so, and nothing else."""
    app = Celery("shop", broker=env.broker_url, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"])
    if quorum:
        app.conf.task_create_missing_queue_type = "quorum"
    return app


def test_quorum_queues_end_to_end(deploy) -> None:
    env: Env = deploy("rabbitmq", queue_type="quorum", **FAST)
    worker = env.worker(concurrency=2)
    types = dict(line.split() for line in rabbitmqctl(
        "list_queues", "-p", str(env.broker.vhost), "--no-table-headers", "name", "type",
    ).splitlines() if line.strip())
    assert types["loyalty.events"] == types["loyalty.admin"] == "quorum"

    plain = producer(env, quorum=False)
    try:
        # RabbitMQ refuses the declaration (406); the refusal closes the channel, and on a
        # busy broker the socket can be gone before kombu answers the close: either way
        # the message is not taken (the balances below count every event).
        with pytest.raises((PreconditionFailed, OperationalError)) as refused:
            plain.send_task("loyalty.events.signup", args=[{"event_id": "x", "contact_id": "x",
                                                            "occurred_at": TS}],
                            queue="loyalty.events", retry=False)
        if refused.type is PreconditionFailed:
            assert "inequivalent arg 'x-queue-type'" in str(refused.value)
    finally:
        plain.close()

    shop = producer(env, quorum=True)
    stream = Stream(contacts=20, orders=600, seed=41)
    try:
        # An order before its signup: retried with a countdown, which on quorum queues
        # the worker holds until due (our queues' exchanges are direct).
        late = stream.signups[0]
        first_order = next(m for m in stream.messages[len(stream.signups):]
                           if m[1]["contact_id"] == late[1]["contact_id"])
        # Retried as tests/e2e/streams.py publishes: the shared broker is busy.
        retry = {"retry": True, "retry_policy": {"max_retries": 30, "interval_start": 0.2,
                                                 "interval_step": 0.5, "interval_max": 2}}
        shop.send_task(first_order[0], args=[first_order[1]], queue="loyalty.events", **retry)
        time.sleep(1)
        for name, payload in stream.messages:
            shop.send_task(name, args=[payload], queue="loyalty.events", **retry)
    finally:
        shop.close()
    wait_for(lambda: processed(env) == stream.distinct_events, 120, "every event")
    wait_for(lambda: env.broker.pending() == 0, 60, "the queues to drain")
    assert balances(env) == stream.expected
    adjusted = env.cli_json("adjust", "--contact-id", late[1]["contact_id"], "--amount", "5",
                            "--description", "quorum", "--actor", "ops")
    assert adjusted["status"] == "applied"
    assert env.cli_json("verify")["ok"]
    logs = worker.logs()
    # Celery's per-consumer prefetch is fixed when the consumer starts; the batcher starts
    # it at its ceiling, so batches still hold many more messages than 4 per process.
    assert max(r.get("messages", 0) for r in logs if r.get("msg") == "batch applied") > 8
    assert any(r.get("msg") == "not applied yet, retrying" for r in logs)
