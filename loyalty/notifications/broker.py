"""Publishing outgoing events to the `loyalty.notifications` topic exchange.

RabbitMQ: a durable topic exchange, persistent messages, and publisher confirms
(`confirm_publish`), so `publish` returns only once the broker has the message; any
service binds a queue with a pattern (`account.*`, `#`). Redis: kombu's virtual topic
exchange, which keeps the bindings in Redis (`_kombu.binding.loyalty.notifications`) and
pushes each message onto every bound queue's list; a queue must be bound (declared by its
consumer) before events are published, as on RabbitMQ, or the message reaches no one.
"""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import urlsplit

from kombu import Connection, Exchange, Producer

from schemas.notifications import EXCHANGE

exchange = Exchange(EXCHANGE, type="topic", durable=True)


class NotificationPublisher:
    def __init__(self, broker_url: str) -> None:
        options: dict[str, Any] = {}
        if urlsplit(broker_url).scheme in ("amqp", "amqps", "pyamqp"):
            options["confirm_publish"] = True
        self.connection = Connection(broker_url, transport_options=options)
        self._producer: Producer | None = None

    def _ensure(self) -> Producer:
        if self._producer is None:
            self.connection.ensure_connection(max_retries=3)
            self._producer = Producer(self.connection.channel(), exchange=exchange)
            exchange.declare(channel=self._producer.channel)
        return self._producer

    def publish(self, event_id: str, event_type: str, body: str) -> None:
        """Publish one event; raises if the broker did not take it (confirmed on AMQP)."""
        producer = self._ensure()
        try:
            producer.publish(body.encode(), routing_key=event_type, content_type="application/json",
                             content_encoding="utf-8", message_id=event_id, delivery_mode=2,
                             headers={"event_type": event_type})
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
