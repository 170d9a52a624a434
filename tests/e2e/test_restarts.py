"""Server restarts in the middle of a stream: the worker recovers on its own, exactly once."""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from loyalty import db
from tests.e2e.conftest import Broker, Env, Worker, wait_for
from tests.e2e.services import PrivatePostgres, PrivateRabbitMQ, PrivateRedis
from tests.e2e.streams import Stream, balances, processed, record_outcome, sql
from tests.e2e.test_failures import FAST, pool_processes_blocked

pytestmark = pytest.mark.e2e


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    # Not under tmp_path: its parents are private to root, and the server runs as postgres.
    server = PrivatePostgres(Path(tempfile.mkdtemp(prefix="loyalty-pg-")))
    server.start()
    yield server
    db.dispose_all()
    server.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    yield server
    server.close()


@pytest.fixture
def private_rabbitmq() -> Iterator[PrivateRabbitMQ]:
    # Not under tmp_path: the node runs as the rabbitmq user.
    server = PrivateRabbitMQ(Path(tempfile.mkdtemp(prefix="loyalty-rmq-")))
    server.start()
    yield server
    server.close()


def test_postgres_restart_mid_stream(deploy, private_postgres: PrivatePostgres) -> None:
    env: Env = deploy("redis", **FAST)
    url = private_postgres.url("postgres")
    db.upgrade(db.get_engine(url))
    db.dispose_all()
    env.db_url = url
    env.vars["LOYALTY_DATABASE_URL"] = url
    worker = env.worker(concurrency=2)
    stream = Stream(contacts=30, orders=300, seed=21)
    stream.publish(env, stream.signups)
    wait_for(lambda: processed(env) >= len(stream.signups), 60, "the signups")
    orders = stream.messages[len(stream.signups):]
    stream.publish(env, orders[:60])
    wait_for(lambda: processed(env) > len(stream.signups) + 30, 60, "some orders")
    private_postgres.stop("fast")  # every connection is cut
    # The rest arrive while it is down, so the worker surely meets the outage (a fast
    # worker could otherwise apply the whole stream before the stop).
    stream.publish(env, orders[60:])
    time.sleep(3)  # messages keep arriving and fail while it is down
    private_postgres.start()
    wait_for(lambda: processed(env) == stream.distinct_events, 180, "every event")
    wait_for(lambda: env.broker.pending() == 0, 60, "the queues to drain")
    assert worker.alive(), "the worker must recover without a restart of its own"
    noticed = {"not applied yet, retrying", "batch failed, requeueing its messages"}
    assert any(r.get("msg") in noticed for r in worker.logs()), \
        "the outage was never noticed: the test did not test anything"
    assert balances(env) == stream.expected
    assert env.cli_json("verify")["ok"]
    assert env.cli_json("dlq", "stats")["total"] == 0


def test_redis_restart_mid_stream(deploy, private_redis: PrivateRedis) -> None:
    env: Env = deploy("redis", **FAST)
    env.broker_url = private_redis.url
    env.broker.url = private_redis.url
    env.vars["LOYALTY_BROKER_URL"] = private_redis.url
    worker = env.worker(concurrency=2)
    stream = Stream(contacts=30, orders=300, seed=22)
    stream.publish(env, stream.signups)
    wait_for(lambda: processed(env) >= len(stream.signups), 60, "the signups")
    stream.publish(env, stream.messages[len(stream.signups):])
    wait_for(lambda: processed(env) > len(stream.signups) + 20, 60, "some orders")
    private_redis.stop()
    time.sleep(2)
    private_redis.start()
    try:
        wait_for(lambda: processed(env) == stream.distinct_events, 120, "every event")
        wait_for(lambda: env.broker.pending() == 0, 60, "the queues to drain")
    finally:
        record_outcome(env, stream)
    time.sleep(2)
    assert worker.alive()
    applied = {event_id for (event_id,) in sql(env, "SELECT event_id FROM processed_events")}
    missing = {p["event_id"] for _n, p in stream.messages} - applied
    # Reliable fetch (worker.redis_reliable): a message is in the queue or in a processing
    # list at every instant, so a restart loses none.
    assert not missing, f"lost {len(missing)} events: {sorted(missing)[:10]}"
    assert balances(env) == stream.expected
    assert env.cli_json("verify")["ok"]


def kill_main_process(worker: Worker) -> None:
    """SIGKILL the worker's main process alone, the one that takes messages from the broker.

    Its pool processes are left to find their parent gone (what a crash of the main process
    leaves behind); the group is killed at the end of the test.
    """
    assert worker.proc is not None
    os.kill(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait(10)


def test_redis_main_process_sigkill_mid_stream(deploy) -> None:
    """Today's hole in kombu's Redis transport: a message popped and not yet recorded."""
    env: Env = deploy("redis", **{**FAST, "poison_deliveries": 20})
    first = env.worker(concurrency=2, name="k1")
    stream = Stream(contacts=30, orders=1500, seed=23)
    stream.publish(env, stream.signups)
    wait_for(lambda: processed(env) >= len(stream.signups), 60, "the signups")
    # Every account locked: the pool processes block inside their transactions, so the main
    # process surely holds messages (batches in hand, its buffer, its prefetch) when it dies.
    holder = psycopg.connect(env.db_url.replace("postgresql+psycopg://", "postgresql://"))
    try:
        holder.execute("SELECT 1 FROM accounts FOR UPDATE")
        stream.publish(env, stream.messages[len(stream.signups):])
        wait_for(lambda: pool_processes_blocked(env, first), 60, "a batch in hand")
        kill_main_process(first)
        holder.rollback()  # its orphaned pool processes may still commit: duplicates later
        assert processed(env) < stream.distinct_events, "the stream ended before the kill"
        second = env.worker(concurrency=2, name="k2")
        wait_for(lambda: processed(env) == stream.distinct_events, 120, "every event")
        wait_for(lambda: env.broker.pending() == 0, 60, "the queues to drain")
    finally:
        holder.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
        record_outcome(env, stream)
    assert any(r.get("msg") == "requeued the messages of consumers that are gone"
               for r in second.logs()), "nothing was held by the killed process: no test"
    assert balances(env) == stream.expected
    assert env.cli_json("verify")["ok"]
    assert env.cli_json("dlq", "stats")["total"] == 0


def test_rabbitmq_restart_mid_stream(deploy, private_rabbitmq: PrivateRabbitMQ) -> None:
    """A broker restart while messages are queued, prefetched and in batches: none lost."""
    env: Env = deploy("redis", **{**FAST, "poison_deliveries": 20})
    env.broker_url = private_rabbitmq.url
    env.broker = Broker("rabbitmq-private", private_rabbitmq.url)
    env.broker.ctl = private_rabbitmq.ctl
    env.vars["LOYALTY_BROKER_URL"] = private_rabbitmq.url
    worker = env.worker(concurrency=2)
    stream = Stream(contacts=30, orders=1000, seed=24)
    stream.publish(env, stream.signups)
    wait_for(lambda: processed(env) >= len(stream.signups), 60, "the signups")
    # Every account locked: the pool processes block inside their transactions with batches
    # in hand, the main process holds its prefetch, and the rest waits in the queue.
    holder = psycopg.connect(env.db_url.replace("postgresql+psycopg://", "postgresql://"))
    try:
        holder.execute("SELECT 1 FROM accounts FOR UPDATE")
        stream.publish(env, stream.messages[len(stream.signups):])
        wait_for(lambda: pool_processes_blocked(env, worker), 60, "a batch in hand")
        private_rabbitmq.stop()
        time.sleep(2)
        private_rabbitmq.start()
    finally:
        holder.rollback()
        holder.close()
    try:
        wait_for(lambda: processed(env) == stream.distinct_events, 180, "every event")
        wait_for(lambda: env.broker.pending() == 0, 60, "the queues to drain")
    finally:
        record_outcome(env, stream)
    assert worker.alive(), "the worker must reconnect on its own"
    assert balances(env) == stream.expected
    assert env.cli_json("verify")["ok"]
    assert env.cli_json("dlq", "stats")["total"] == 0
