"""Acknowledging a batch's messages after its commit: one small class per broker.

One ack per message costs the main process a socket write (RabbitMQ) or a Redis round
trip each (docs/performance.md), so each broker's acker settles a batch with one
command where that broker allows it, and falls back to one ack per message where it
does not. `for_connection` picks the acker of the consumer's transport, as dramatiq
picks a broker plug-in.
"""

from __future__ import annotations

from typing import Any

from kombu.transport.virtual import QoS as VirtualQoS

#: Past this many open messages, settled ones are swept out of `RabbitMQAcker.open`.
OPEN_LIMIT = 20_000


class Acker:
    """Any broker: one ack per message."""

    def track(self, message: Any) -> None:
        """Record a message taken on the current channel and still unacknowledged after
        its handler returned (the batch buffer, a stock-path task, a retry waiting for
        its ETA). Brokers whose grouped ack cannot cover a foreign message ignore it."""

    def forget(self, messages: list[Any]) -> None:
        """The messages are settled (or their channel is gone): stop tracking them."""

    def ack(self, messages: list[Any]) -> str:
        """Acknowledge the messages; returns which way it went ("each" here)."""
        for message in messages:
            message.ack()
        return "each"


def _mark_acked(messages: list[Any]) -> None:
    for message in messages:
        message._state = "ACK"  # what kombu's own ack records


class RabbitMQAcker(Acker):
    """RabbitMQ's `multiple` ack settles every unsettled delivery up to a tag: it is sent
    only when no other open message of this channel (another batch, the buffer, a retry
    waiting for its ETA, an admin task) sits below the batch's highest tag; otherwise
    one ack per message."""

    def __init__(self) -> None:
        #: Every message taken on the current channel and not settled yet, in delivery
        #: order (so by delivery tag), whichever path it took.
        self.open: dict[Any, Any] = {}
        self.open_limit = OPEN_LIMIT

    def track(self, message: Any) -> None:
        self.open[message.delivery_tag] = message
        if len(self.open) > self.open_limit:  # settled stragglers behind a long-held message
            self.open = {t: m for t, m in self.open.items() if not m.acknowledged}
            # Still that many open (a flood of retries waiting for their ETA): sweep
            # again only once it has doubled, not at every message.
            self.open_limit = max(OPEN_LIMIT, 2 * len(self.open))

    def forget(self, messages: list[Any]) -> None:
        for settled in messages:
            tag = settled.delivery_tag
            if self.open.get(tag) is settled:
                del self.open[tag]

    def ack(self, messages: list[Any]) -> str:
        if len(messages) > 1 and self._covers_only(messages):
            max(messages, key=lambda m: m.delivery_tag).ack(multiple=True)
            _mark_acked(messages)
            return "multiple"
        return super().ack(messages)

    def _covers_only(self, messages: list[Any]) -> bool:
        """Whether a multiple ack up to the messages' highest tag covers only them."""
        mine = {m.delivery_tag for m in messages}
        if any(self.open.get(m.delivery_tag) is not m for m in messages):
            return False  # taken on an older channel
        top = max(mine)
        for tag, message in list(self.open.items()):
            if tag > top:
                break
            if tag in mine:
                continue
            if not message.acknowledged:
                return False
            del self.open[tag]
        return True


class RedisAcker(Acker):
    """kombu's Redis transport ignores `multiple`; a batch's unacked records are removed
    in one pipeline instead, or by the QoS's own `ack_many` where the transport has one
    (a reliable-fetch transport). Messages of several channels go one by one."""

    def track(self, message: Any) -> None:
        # Nothing to track: a grouped ack here names its messages one by one.
        pass

    def ack(self, messages: list[Any]) -> str:
        if len(messages) > 1 and all(m.channel is messages[0].channel for m in messages):
            redis_ack(messages)
            _mark_acked(messages)
            return "pipeline"
        return super().ack(messages)


def redis_ack(messages: list[Any]) -> None:
    """What kombu's Redis QoS.ack does per message, for all of them in one pipeline."""
    channel = messages[0].channel
    qos = channel.qos
    tags = [m.delivery_tag for m in messages]
    ack_many = getattr(qos, "ack_many", None)
    if callable(ack_many):
        ack_many(tags)
        return
    with channel.conn_or_acquire() as client:
        client.pipeline().zrem(qos.unacked_index_key, *tags) \
            .hdel(qos.unacked_key, *tags).execute()
    for tag in tags:
        VirtualQoS.ack(qos, tag)


#: Transport driver type -> its acker.
ACKERS: dict[str, type[Acker]] = {"amqp": RabbitMQAcker, "redis": RedisAcker}


def for_connection(connection: Any) -> Acker:
    """The acker of a connection's broker; one ack per message for any other."""
    transport = getattr(connection, "transport", None)
    return ACKERS.get(getattr(transport, "driver_type", ""), Acker)()
