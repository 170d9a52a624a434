"""Publisher confirms on RabbitMQ: a publish the broker refuses is reported, never lost silently."""

from __future__ import annotations

import json

import pytest

from loyalty.errors import PublishError
from loyalty.publish import Publisher
from loyalty.settings import Settings
from tests.e2e.conftest import Env, rabbitmqctl
from tests.e2e.streams import TS

pytestmark = pytest.mark.e2e


def ready(env: Env, queue: str) -> int:
    out = rabbitmqctl("list_queues", "-p", str(env.broker.vhost), "--no-table-headers",
                      "name", "messages_ready")
    counts = dict(line.split() for line in out.splitlines() if line.strip())
    return int(counts.get(queue, 0))


def test_a_publish_to_a_full_queue_is_refused_and_the_caller_is_told(deploy) -> None:
    env: Env = deploy("rabbitmq")
    # One message at most, and a publish beyond it refused (basic.nack), as an operator's
    # length limit would. A policy, so the queue's own declaration stays what producers send.
    rabbitmqctl("set_policy", "-p", str(env.broker.vhost), "--apply-to", "queues", "full",
                r"^loyalty\.events$", json.dumps({"max-length": 1, "overflow": "reject-publish"}))
    with Publisher(settings=Settings.from_env(env.vars)) as publisher:
        publisher.signup(contact_id="first", occurred_at=TS)  # fills the queue
        with pytest.raises(PublishError) as refused:
            publisher.order_completed(contact_id="first", order_id="o-1", total="1.00",
                                      currency="USD", occurred_at=TS)
        assert "refused" in str(refused.value)
        with pytest.raises(PublishError):
            publisher.send_bulk([("signup", {"event_id": "b-1", "contact_id": "b",
                                             "occurred_at": TS})])
    done = env.cli("publish", "order", "--contact-id", "first", "--order-id", "o-2",
                   "--total", "2.00", "--currency", "USD", check=False)
    assert done.returncode == 1, done.stdout
    assert done.stderr.startswith("error: could not publish loyalty.events.order_completed: "
                                  "the broker refused"), done.stderr
    assert ready(env, "loyalty.events") == 1  # only the first one is there
