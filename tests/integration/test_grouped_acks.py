"""A batch's grouped acknowledgement must settle exactly its own messages, on real brokers.

RabbitMQ's `multiple` ack settles every delivery up to a tag: sent at the wrong
moment it would silently settle a message that another path still holds, and a
crash would then lose it. Whatever was not acknowledged must come back when the
connection closes; that is what these tests count.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from kombu import Connection, Consumer, Queue

from tests.conftest import RABBITMQ_URL, REDIS_HOST, require
from worker.batching import acks


@pytest.fixture(params=["rabbitmq", "redis"])
def broker_url(request: pytest.FixtureRequest) -> str:
    if request.param == "rabbitmq":
        require("127.0.0.1", 5672, "RabbitMQ")
        return RABBITMQ_URL
    require(REDIS_HOST, 6379, "Redis")
    return f"redis://{REDIS_HOST}:6379/13"


@pytest.fixture
def queue(broker_url: str) -> Iterator[Queue]:
    queue = Queue(f"acks-test-{uuid.uuid4().hex[:8]}")
    yield queue
    with Connection(broker_url) as conn:
        queue.bind(conn.default_channel).delete()


def publish(url: str, queue: Queue, n: int) -> None:
    with Connection(url) as conn:
        producer = conn.Producer()
        for i in range(n):
            producer.publish({"n": i}, routing_key=queue.name, declare=[queue],
                             serializer="json")


def take(conn: Connection, queue: Queue, n: int) -> list[Any]:
    """n messages, in delivery order, none acknowledged."""
    got: list[Any] = []
    consumer = Consumer(conn.default_channel, [queue], callbacks=[lambda _b, m: got.append(m)],
                        accept=["json"])
    consumer.qos(prefetch_count=n)
    consumer.consume()
    while len(got) < n:
        conn.drain_events(timeout=5)
    return got


def left_in_queue(url: str, queue: Queue) -> list[int]:
    with Connection(url) as conn:
        found = []
        simple = conn.SimpleQueue(queue)
        while True:
            try:
                message = simple.get(timeout=1)
            except simple.Empty:
                return sorted(found)
            found.append(message.payload["n"])
            message.ack()


@contextmanager
def holding(url: str, queue: Queue, n: int) -> Iterator[tuple[list[Any], acks.Acker]]:
    """n messages taken and not acknowledged, and the broker's acker, which tracked them
    as the consumer's hook does; closing the connection at the end returns what is still
    open (Redis restores its unacked records at close)."""
    publish(url, queue, n)
    with Connection(url) as conn:
        messages = take(conn, queue, n)
        acker = acks.for_connection(conn)
        for message in messages:  # in delivery order
            acker.track(message)
        yield messages, acker


def test_a_batch_below_every_open_message_is_acknowledged_at_once(broker_url: str,
                                                                   queue: Queue) -> None:
    with holding(broker_url, queue, 10) as (messages, acker):
        mode = acker.ack(messages[:5])
        assert mode == ("multiple" if broker_url.startswith("amqp") else "pipeline")
        assert all(m.acknowledged for m in messages[:5])
    assert left_in_queue(broker_url, queue) == [5, 6, 7, 8, 9]


def test_a_grouped_ack_never_covers_an_open_message_below_the_batch(broker_url: str,
                                                                      queue: Queue) -> None:
    with holding(broker_url, queue, 10) as (messages, acker):
        messages[2].ack()  # settled elsewhere (a stock-path task): no longer in the way
        batch = [messages[0], messages[1], messages[4], messages[5], messages[6]]
        # messages[3] is still held by another path, below the batch's highest tag.
        mode = acker.ack(batch)
        assert mode == ("each" if broker_url.startswith("amqp") else "pipeline")
        # Once it is settled, the next batch above it goes at once again.
        messages[3].ack()
        assert acker.ack(messages[7:9]) in ("multiple", "pipeline")
    assert left_in_queue(broker_url, queue) == [9]


def test_the_acker_is_the_brokers(broker_url: str) -> None:
    with Connection(broker_url) as conn:
        acker = acks.for_connection(conn)
    expected = acks.RabbitMQAcker if broker_url.startswith("amqp") else acks.RedisAcker
    assert type(acker) is expected


@pytest.mark.parametrize("broker_url", ["redis"], indirect=True)
def test_a_redis_qos_with_ack_many_settles_the_batch_with_it(broker_url: str,
                                                             queue: Queue) -> None:
    """A reliable-fetch transport's QoS offers `ack_many`: the batch goes through it,
    once, with exactly the batch's tags, and not through the pipeline."""
    url = broker_url
    calls: list[list[Any]] = []
    with holding(url, queue, 6) as (messages, acker):
        qos = messages[0].channel.qos

        def ack_many(tags: list[Any]) -> None:
            calls.append(list(tags))
            for tag in tags:
                qos.ack(tag)

        qos.ack_many = ack_many
        try:
            assert acker.ack(messages[:4]) == "pipeline"
        finally:
            del qos.ack_many
        assert calls == [[m.delivery_tag for m in messages[:4]]]
        assert all(m.acknowledged for m in messages[:4])
    assert left_in_queue(url, queue) == [4, 5]
