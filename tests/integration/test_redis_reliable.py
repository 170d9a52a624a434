"""Reliable fetch on a real Redis (worker.redis_reliable): where a message is at each step.

A consumer that vanishes is simulated by dropping its connection without closing its
channel, which is what a SIGKILL leaves behind: its processing lists and an expiring
heartbeat. Producers are plain kombu, as a shop's Celery client is.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Queue

from tests.e2e.services import PrivateRedis
from worker.redis_reliable import ALIVE, PREFIX, UNREADABLE

TRANSPORT = "worker.redis_reliable:Transport"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    """A redis-server of its own: these tests sweep every processing list of their database,
    which on a shared one would include a running worker's."""
    server = PrivateRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.close()


@pytest.fixture
def url(server: PrivateRedis) -> Iterator[str]:
    client = redis.Redis.from_url(server.url)
    client.flushdb()
    yield server.url
    client.close()


@pytest.fixture
def queue() -> Queue:
    name = f"rel-{uuid.uuid4().hex[:8]}"
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def publish(url: str, queue: Queue, numbers: range, **options: Any) -> None:
    with Connection(url) as conn:  # kombu's stock transport: an unchanged producer
        producer = conn.Producer(serializer="json")
        for n in numbers:
            producer.publish({"n": n}, exchange=queue.exchange, routing_key=queue.routing_key,
                             declare=[queue], **options)


def consumer(url: str, **options: Any) -> Connection:
    return Connection(url, transport=TRANSPORT,
                      transport_options={"visibility_timeout": 30, **options})


def take(conn: Connection, queue: Queue, n: int, no_ack: bool = False,
         tries: int = 50) -> list[Any]:
    got: list[Any] = []
    c = Consumer(conn.default_channel, [queue], callbacks=[lambda _b, m: got.append(m)],
                 accept=["json"], no_ack=no_ack)
    c.qos(prefetch_count=n)
    c.consume()
    for _ in range(tries):
        if len(got) >= n:
            break
        with contextlib.suppress(TimeoutError):
            conn.drain_events(timeout=0.5)
    return got


def held(url: str) -> dict[str, int]:
    client = redis.Redis.from_url(url)
    try:
        return {k.decode(): client.llen(k) for k in client.scan_iter(PREFIX + "*")
                if client.type(k) == b"list" and k != UNREADABLE.encode()}
    finally:
        client.close()


def queued(url: str, queue: Queue) -> list[tuple[int, bool]]:
    """(n, redelivered) of every message in the queue, next to be taken first."""
    import json

    client = redis.Redis.from_url(url)
    try:
        out = []
        for raw in reversed(client.lrange(queue.name, 0, -1)):
            payload = json.loads(raw)
            body = json.loads(__import__("base64").b64decode(payload["body"]))
            out.append((body["n"], bool(payload["properties"]["delivery_info"]
                                        .get("redelivered"))))
        return out
    finally:
        client.close()


def vanish(conn: Connection) -> None:
    """What a SIGKILL leaves: the sockets gone, nothing restored, the heartbeat left to expire."""
    channel = conn.default_channel
    channel._alive_at = None  # no restore at close: the process never got to it
    conn.transport.cycle.close()
    channel._disconnect_pools()


def test_a_taken_message_is_in_its_consumers_processing_list_until_acked(url, queue) -> None:
    publish(url, queue, range(4))
    with consumer(url) as conn:
        messages = take(conn, queue, 3)
        assert [m.payload["n"] for m in messages] == [0, 1, 2]
        lists = held(url)
        assert list(lists.values()) == [3]
        assert next(iter(lists)).endswith("." + queue.name)
        assert [n for n, _r in queued(url, queue)] == [3]
        messages[0].ack()
        conn.default_channel.qos.ack_many([m.delivery_tag for m in messages[1:]])
        assert held(url) == {}
    assert [n for n, _r in queued(url, queue)] == [3]


def test_a_requeued_message_goes_back_to_its_own_queue_marked_redelivered(url, queue) -> None:
    publish(url, queue, range(2))
    with consumer(url) as conn:
        first, second = take(conn, queue, 2)
        first.reject(requeue=True)
        second.reject(requeue=False)
        assert held(url) == {}
        assert queued(url, queue) == [(0, True)]


def test_a_clean_close_puts_back_what_it_held_in_order(url, queue) -> None:
    publish(url, queue, range(5))
    with consumer(url) as conn:
        messages = take(conn, queue, 3)
        messages[1].ack()
    assert held(url) == {}
    assert queued(url, queue) == [(0, True), (2, True), (3, False), (4, False)]
    client = redis.Redis.from_url(url)
    assert not list(client.scan_iter(ALIVE + "*"))  # its heartbeat ended with it
    client.close()


def test_a_vanished_consumers_messages_come_back_once_its_heartbeat_expires(url, queue) -> None:
    publish(url, queue, range(4))
    dead = consumer(url)
    taken = take(dead, queue, 3)
    assert len(taken) == 3
    dead_id = dead.default_channel.consumer_id
    vanish(dead)
    with consumer(url) as live:
        live.default_channel.keep_alive()  # a live consumer's first sweep
        assert list(held(url).values()) == [3], "alive: its heartbeat has not expired"
        redis.Redis.from_url(url).delete(ALIVE + dead_id)  # what its TTL does
        assert live.default_channel.recover_abandoned(force=True) == 3
        assert held(url) == {}
        assert queued(url, queue) == [(0, True), (1, True), (2, True), (3, False)]
        again = take(live, queue, 4)
        assert [m.payload["n"] for m in again] == [0, 1, 2, 3]
        assert all(m.delivery_info.get("redelivered") for m in again[:3])
        for m in again:
            m.ack()
    assert held(url) == {} and queued(url, queue) == []


def test_an_ack_after_recovery_changes_nothing_and_two_sweepers_move_once(url, queue) -> None:
    publish(url, queue, range(250))
    dead = consumer(url)
    taken = take(dead, queue, 250)
    dead_id = dead.default_channel.consumer_id
    redis.Redis.from_url(url).delete(ALIVE + dead_id)
    one, two = consumer(url), consumer(url)
    try:
        # Each sweeps at its first fetch, and again: the lists move exactly once.
        one.default_channel.keep_alive()
        two.default_channel.keep_alive()
        one.default_channel.recover_abandoned(force=True)
        two.default_channel.recover_abandoned(force=True)
        assert held(url) == {}
        taken[0].ack()  # the stalled consumer wakes up: its copy is gone, nothing breaks
        assert sorted(n for n, _r in queued(url, queue)) == list(range(250))
    finally:
        one.close()
        two.close()
        vanish(dead)


def test_priorities_and_no_ack_consumers_keep_kombus_semantics(url, queue) -> None:
    publish(url, queue, range(2))
    publish(url, queue, range(10, 11), priority=9)
    with consumer(url) as conn:
        got = take(conn, queue, 3, no_ack=True)
        assert [m.payload["n"] for m in got] == [0, 1, 10] or got[0].payload["n"] == 10
        assert held(url) == {}  # no_ack: popped, nothing to settle


def test_an_item_that_is_not_a_message_is_kept_aside_not_lost(url, queue) -> None:
    client = redis.Redis.from_url(url)
    publish(url, queue, range(1))
    client.lpush(queue.name, b"\xffnot json")  # taken after the real message
    with consumer(url) as conn:
        got = take(conn, queue, 2, tries=6)
        assert [m.payload["n"] for m in got] == [0]
        got[0].ack()
    assert client.lrange(UNREADABLE, 0, -1) == [b"\xffnot json"]
    assert held(url) == {}
    client.close()
