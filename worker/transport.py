"""kombu's Redis transport, with each delivered message stamped with the queue it came from.

On RabbitMQ the broker tells which consumer (and so which queue) a delivery is for. On
Redis a message's `delivery_info` is whatever its producer wrote, so it cannot say which
list the message was popped from: a producer allowed only `loyalty.events` could claim
`loyalty.admin`. The consumer's callback for a queue knows, so it writes the truth into
`delivery_info["loyalty_queue"]`, which `worker.consumer` checks against the task.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis

QUEUE_KEY = "loyalty_queue"


class Channel(redis.Channel):
    def basic_consume(self, queue: str, no_ack: bool, callback: Any, consumer_tag: str,
                      **kwargs: Any) -> Any:
        def delivered(message: Any) -> Any:
            info = message.delivery_info
            if not isinstance(info, dict):
                info = message.delivery_info = {}
            info[QUEUE_KEY] = queue
            return callback(message)

        return super().basic_consume(queue, no_ack, delivered, consumer_tag, **kwargs)


class Transport(redis.Transport):
    Channel = Channel
