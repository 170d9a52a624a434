"""Celery configuration derived from the one `Settings` object."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from kombu import Exchange, Queue

from loyalty.settings import Settings
from schemas.events import EVENTS_QUEUE, QUEUES
from tasks.table import routes

#: Key the worker adds to each consumed message's delivery_info: the queue it was
#: actually taken from. The message's own exchange and routing key do not tell: on
#: Redis they come from the producer's payload.
ARRIVED_ON = "loyalty_arrived_on"


class ConsumedQueue(Queue):
    """A queue that tags every message it delivers with its own name (ARRIVED_ON).

    kombu calls `consume` once per queue with the consumer's callback; the callback
    wrapped here runs for this queue's messages only (per consumer tag on AMQP, per
    list on Redis), so the tag is the broker's word, not the producer's.
    """

    def consume(self, consumer_tag: str = "", callback: Any = None, no_ack: Any = None,
                nowait: bool = False, on_cancel: Any = None) -> Any:
        if callback is not None:
            name, deliver = self.name, callback

            def callback(message: Any) -> Any:
                info = getattr(message, "delivery_info", None)
                if isinstance(info, dict):
                    info[ARRIVED_ON] = name
                return deliver(message)

        return super().consume(consumer_tag, callback, no_ack=no_ack, nowait=nowait,
                               on_cancel=on_cancel)


def _queue(name: str, queue_type: str = "classic") -> Queue:
    """Exactly what a bare Celery client declares for `send_task(..., queue=name)`:
    a direct exchange and a routing key both named after the queue (and with
    `task_create_missing_queue_type = "quorum"`, the quorum type). Without them
    Celery would bind every queue with the default queue's key."""
    arguments = {"x-queue-type": "quorum"} if queue_type == "quorum" else None
    return ConsumedQueue(name, Exchange(name, type="direct"), routing_key=name,
                         queue_arguments=arguments)


#: kombu's Redis transport with reliable fetch (worker.redis_reliable). Only the worker
#: consumes through it; producers publish as they always have.
RELIABLE_REDIS = "worker.redis_reliable:Transport"


def broker_transport(broker_url: str) -> str | None:
    """The transport the worker consumes with: ours on Redis, kombu's choice otherwise."""
    return RELIABLE_REDIS if urlsplit(broker_url).scheme in ("redis", "rediss") else None


def publish_options(broker_url: str) -> dict[str, Any]:
    """Transport options for publishing: on RabbitMQ every publish waits for the broker's
    confirm (`basic.ack`), and a `basic.nack` (a queue at its length limit with
    `reject-publish`, a refused message) raises instead of being lost. A Redis publish is
    an LPUSH whose reply already says it was written."""
    scheme = urlsplit(broker_url).scheme
    return {"confirm_publish": True} if scheme in ("amqp", "amqps", "pyamqp") else {}


def celery_config(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.broker_url,
        "broker_transport": broker_transport(settings.broker_url),
        "result_backend": settings.result_backend,
        # Only JSON crosses the broker: pickle or yaml bodies are refused unread.
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_serializer": "json",
        "result_serializer": "json",
        # Ack after the ledger commit; a killed worker's message is delivered again
        # and the idempotency keys make the second run change nothing.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # The starting prefetch. With batching on, the batcher raises it to two
        # batches per process once it sees single events, and keeps it low for bulk
        # messages (see worker.batching.intake.Batcher._credit).
        "worker_prefetch_multiplier": settings.prefetch_multiplier,
        "task_ignore_result": True,
        "result_expires": settings.result_expires,
        "result_extended": False,
        "task_time_limit": settings.task_time_limit,
        "task_soft_time_limit": max(1, settings.task_time_limit - 5),
        # Redis: unacknowledged messages are restored under a mutex that outlives a
        # restorer which died with its connection (kombu's default: 300 s); keep that
        # no longer than the visibility timeout itself. And sweep for them every
        # interval: kombu scans only every 10th sweep by default, so a message whose
        # consumer lost its connection waited up to 100 s past its visibility timeout.
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout,
            "unacked_mutex_expire": settings.visibility_timeout,
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout // 2)),
            "unacked_restore_throttle": 1,
            **publish_options(settings.broker_url),
        },
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        # Same declarations as a bare `send_task(..., queue="loyalty.events")`
        # client makes, so producers without our code agree with the worker.
        # Queues and routes come from the task table (tasks.table).
        "task_queues": [_queue(name, settings.queue_type) for name in QUEUES],
        "task_create_missing_queue_type": settings.queue_type,
        "task_default_queue": EVENTS_QUEUE,
        "task_routes": routes(),
        "worker_send_task_events": False,
        # No pidbox consumer unless the operator asks for it (then signing is enforced
        # by Settings.validate, and worker.app makes the mailbox accept only `auth`).
        "worker_enable_remote_control": settings.remote_control,
        # Unreadable messages go to the dead-letter table instead of being deleted.
        "worker_consumer": "worker.consumer:DeadLetteringConsumer",
        "worker_hijack_root_logger": True,
        "worker_redirect_stdouts": False,
        "enable_utc": True,
    }
