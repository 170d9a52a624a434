"""Broker users, shown working: a shop's user publishes events and nothing else.

The users are made with the rules docker-compose ships (docker/rabbitmq/permissions on the
test's own virtual host, docker/redis/users.acl-rules as Redis ACL users), under names of
this run, and deleted afterwards.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from amqp.exceptions import AccessRefused
from celery import Celery
from kombu import Connection
from kombu.exceptions import OperationalError

from tests.conftest import REDIS_HOST, RUN_ID
from tests.e2e.conftest import Env, rabbitmqctl, wait_for
from tests.e2e.streams import TS, balances, sql
from tests.e2e.test_failures import FAST

pytestmark = pytest.mark.e2e

PERMISSIONS = Path(__file__).resolve().parents[2] / "docker" / "rabbitmq" / "permissions"


def shipped_permissions() -> dict[str, tuple[str, str, str]]:
    """user -> (configure, write, read), as docker-compose creates them."""
    found = {}
    for line in PERMISSIONS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            user, configure, write, read = line.split()
            found[user] = (configure, write, read)
    return found


@pytest.fixture
def broker_users() -> Iterator[Callable[[Env], dict[str, str]]]:
    """Creates the shipped users on a deployment's vhost; returns their broker URLs."""
    made: list[str] = []

    def make(env: Env) -> dict[str, str]:
        urls = {}
        for role, perms in shipped_permissions().items():
            name, password = f"{role}-{RUN_ID}", secrets.token_hex(12)
            rabbitmqctl("add_user", name, password)
            made.append(name)
            rabbitmqctl("set_permissions", "-p", env.broker.vhost, name, *perms)
            urls[role] = f"amqp://{name}:{password}@127.0.0.1:5672/{env.broker.vhost}"
        return urls

    yield make
    for name in made:
        rabbitmqctl("delete_user", name)


def client(url: str) -> Celery:
    """A plain Celery producer; publisher confirms make a refused publish raise at once."""
    app = Celery("shop", broker=url, set_as_current=False)
    app.conf.update(task_serializer="json", broker_connection_retry=False)
    if url.startswith("amqp"):
        app.conf.broker_transport_options = {"confirm_publish": True}
    return app


def publish(url: str, task: str, payload: dict[str, Any], queue: str, **options: Any) -> None:
    app = client(url)
    try:
        app.send_task(task, args=[payload], queue=queue, retry=False, **options)
    finally:
        app.close()


def test_producer_user_publishes_events_only(deploy, broker_users) -> None:
    env: Env = deploy("rabbitmq", **FAST)
    urls = broker_users(env)
    env.broker_url = urls["loyalty-worker"]
    env.vars["LOYALTY_BROKER_URL"] = urls["loyalty-worker"]
    env.worker()  # declares loyalty.events and loyalty.admin with their exchanges
    producer = urls["loyalty-producer"]

    # What a shop sends: to the loyalty.events exchange, declaring nothing.
    to_events = {"exchange": "loyalty.events", "routing_key": "loyalty.events", "declare": []}
    publish(producer, "loyalty.events.signup",
            {"event_id": "perm-su", "contact_id": "perm-1", "occurred_at": TS},
            "loyalty.events", **to_events)
    wait_for(lambda: balances(env).get("perm-1") == 100, 30, "the producer's signup")

    grant = {"request_id": "steal-1", "contact_id": "perm-1", "balance": 999_999_999,
             "description": "free points", "actor": "shop"}
    # The admin queue by its exchange, as the shop would address it ...
    with pytest.raises(AccessRefused) as refused:
        publish(producer, "loyalty.accounts.adjust_points", grant, "loyalty.admin",
                exchange="loyalty.admin", routing_key="loyalty.admin", declare=[])
    assert refused.value.reply_code == 403
    assert "ACCESS_REFUSED - access to exchange 'loyalty.admin'" in str(refused.value)
    # ... through the default exchange, which routes to any queue by name ...
    with pytest.raises(AccessRefused) as refused:
        publish(producer, "loyalty.accounts.adjust_points", grant, "loyalty.admin", declare=[])
    assert refused.value.reply_code == 403
    assert "ACCESS_REFUSED - access to exchange 'amq.default'" in str(refused.value)
    # ... and a bare send_task(..., queue="loyalty.admin"), which declares first.
    with pytest.raises(AccessRefused) as refused:
        publish(producer, "loyalty.accounts.adjust_points", grant, "loyalty.admin")
    assert refused.value.reply_code == 403
    assert "ACCESS_REFUSED - access to exchange 'loyalty.admin'" in str(refused.value)
    # A producer cannot read (and so take away) the events of others either.
    with Connection(producer) as conn, pytest.raises(AccessRefused) as refused:
        conn.default_channel.basic_get("loyalty.events")
    assert "ACCESS_REFUSED - access to queue 'loyalty.events'" in str(refused.value)

    # Staff adjust with their own user; the result comes back through Redis.
    staff = {**env.vars, "LOYALTY_BROKER_URL": urls["loyalty-staff"]}
    worker_vars, env.vars = env.vars, staff
    try:
        adjusted = env.cli_json("adjust", "--contact-id", "perm-1", "--amount", "5",
                                "--description", "staff", "--actor", "ops")
    finally:
        env.vars = worker_vars
    assert adjusted["status"] == "applied"
    assert adjusted["account"]["points"]["balance"] == 105

    # Nothing of the producer's reached the admin queue or the ledger.
    queues = dict(line.split() for line in rabbitmqctl(
        "list_queues", "-p", env.broker.vhost, "--no-table-headers", "name", "messages",
    ).splitlines() if line.strip())
    assert queues["loyalty.admin"] == "0"
    assert balances(env) == {"perm-1": 105}
    assert sql(env, "SELECT type, amount FROM ledger_entries ORDER BY seq") == [
        ("EARN", 100), ("ADJUST", 5)]


ACL_RULES = PERMISSIONS.parents[1] / "redis" / "users.acl-rules"


def shipped_acl_rules() -> dict[str, list[str]]:
    """user -> its ACL rules, as docker-compose creates them."""
    found = {}
    for line in ACL_RULES.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            user, *rules = line.split()
            found[user] = rules
    return found


@pytest.fixture
def redis_users(redis_index: int) -> Iterator[dict[str, str]]:
    """The shipped Redis users under names of this run, deleted afterwards; their URLs."""
    admin = redis.Redis(host=REDIS_HOST, port=6379)
    made, urls = [], {}
    try:
        for role, rules in shipped_acl_rules().items():
            name, password = f"{role}-{RUN_ID}", secrets.token_hex(12)
            admin.execute_command("ACL", "SETUSER", name, "reset", "on", f">{password}", *rules)
            made.append(name)
            urls[role] = f"redis://{name}:{password}@{REDIS_HOST}:6379/{redis_index}"
        yield urls
    finally:
        for name in made:
            admin.execute_command("ACL", "DELUSER", name)
        admin.close()


def test_redis_producer_user_publishes_events_only(deploy, redis_users) -> None:
    env: Env = deploy("redis", **FAST)
    worker_url, producer = redis_users["loyalty-worker"], redis_users["loyalty-producer"]
    env.vars.update(LOYALTY_BROKER_URL=worker_url, LOYALTY_RESULT_BACKEND=worker_url)
    env.worker()

    # A bare Celery client, as in the README's contract.
    publish(producer, "loyalty.events.signup",
            {"event_id": "acl-su", "contact_id": "acl-1", "occurred_at": TS}, "loyalty.events")
    wait_for(lambda: balances(env).get("acl-1") == 100, 30, "the producer's signup")

    grant = {"request_id": "steal-1", "contact_id": "acl-1", "balance": 999_999_999,
             "description": "free points", "actor": "shop"}
    for options in ({}, {"declare": []}):
        with pytest.raises(OperationalError) as refused:
            publish(producer, "loyalty.accounts.adjust_points", grant, "loyalty.admin",
                    **options)
        assert "no permissions to access one of the keys" in str(refused.value)
    as_producer = redis.Redis.from_url(producer)
    try:
        for read in (lambda: as_producer.rpop("loyalty.events"),
                     lambda: as_producer.lrange("loyalty.events", 0, -1),
                     lambda: as_producer.hgetall("unacked")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                read()
    finally:
        as_producer.close()

    staff = {**env.vars, "LOYALTY_BROKER_URL": redis_users["loyalty-staff"],
             "LOYALTY_RESULT_BACKEND": redis_users["loyalty-staff"]}
    worker_vars, env.vars = env.vars, staff
    try:
        adjusted = env.cli_json("adjust", "--contact-id", "acl-1", "--amount", "5",
                                "--description", "staff", "--actor", "ops")
    finally:
        env.vars = worker_vars
    assert adjusted["status"] == "applied"
    assert balances(env) == {"acl-1": 105}
    assert sql(env, "SELECT type, amount FROM ledger_entries ORDER BY seq") == [
        ("EARN", 100), ("ADJUST", 5)]
    assert env.broker.pending() == 0
