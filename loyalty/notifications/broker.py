"""Publishing outgoing events to the `loyalty.notifications` topic exchange.

RabbitMQ: a durable topic exchange and persistent messages, published in an AMQP
transaction per relay batch: `flush` (`tx.commit`) returns only once the broker has taken
every message of the batch, one round trip per batch where per-message publisher
confirms (py-amqp waits for each) cost one per event (docs/performance.md). Any service
binds a queue with a pattern (`account.*`, `#`). Redis: kombu's virtual topic
exchange, which keeps the bindings in Redis (`_kombu.binding.loyalty.notifications`) and
pushes each message onto every bound queue's list; a queue must be bound (declared by its
consumer) before events are published, as on RabbitMQ, or the message reaches no one.
"""

from __future__ import annotations

import contextlib
from urllib.parse import urlsplit

from kombu import Connection, Exchange, Producer

from schemas.notifications import EXCHANGE

exchange = Exchange(EXCHANGE, type="topic", durable=True)


class NotificationPublisher:
    def __init__(self, broker_url: str) -> None:
        self.transactional = urlsplit(broker_url).scheme in ("amqp", "amqps", "pyamqp")
        self.connection = Connection(broker_url)
        self._producer: Producer | None = None

    def _ensure(self) -> Producer:
        if self._producer is None:
            self.connection.ensure_connection(max_retries=3)
            channel = self.connection.channel()
            exchange.declare(channel=channel)
            if self.transactional:
                channel.tx_select()
            self._producer = Producer(channel, exchange=exchange)
        return self._producer

    def publish(self, event_id: str, event_type: str, body: str) -> None:
        """Publish one event; on AMQP it is the broker's only after `flush`."""
        producer = self._ensure()
        try:
            producer.publish(body.encode(), routing_key=event_type, content_type="application/json",
                             content_encoding="utf-8", message_id=event_id, delivery_mode=2,
                             headers={"event_type": event_type})
        except Exception:
            self.reset()
            raise

    def flush(self) -> None:
        """Returns once the broker holds everything published since the last flush
        (RabbitMQ: commits the channel's transaction; Redis: each push was synchronous)."""
        if self.transactional and self._producer is not None:
            try:
                self._producer.channel.tx_commit()
            except Exception:
                self.reset()
                raise

    def reset(self) -> None:
        """Drop the channel after a failure; the next publish reconnects."""
        self._producer = None
        with contextlib.suppress(Exception):  # closing a broken connection may fail too
            self.connection.close()
        self.connection = self.connection.clone()

    def close(self) -> None:
        self._producer = None
        self.connection.release()
