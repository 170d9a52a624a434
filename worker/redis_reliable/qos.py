"""Acknowledgements against processing lists; kombu's own records only as a fallback."""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport.virtual import QoS as VirtualQoS

from worker.redis_reliable.processing_lists import SETTLE, parse_processing_list, redelivered

log = logging.getLogger("loyalty.broker")


class QoS(kombu_redis.QoS):
    """Acknowledgements against processing lists; kombu's own records only as a fallback."""

    def append(self, message: Any, delivery_tag: Any) -> None:
        # Already recorded in Redis by the fetch itself: no round trip here.
        VirtualQoS.append(self, message, delivery_tag)

    def _record(self, delivery_tag: Any) -> tuple[str, bytes] | None:
        records = self.channel.connection.fetched.get(delivery_tag)
        if not records:
            return None
        record: tuple[str, bytes] = records.pop()
        if not records:
            del self.channel.connection.fetched[delivery_tag]
        return record

    def ack(self, delivery_tag: Any) -> None:
        record = self._record(delivery_tag)
        if record is None:
            return super().ack(delivery_tag)
        with self.channel.conn_or_acquire() as client:
            client.lrem(record[0], -1, record[1])
        VirtualQoS.ack(self, delivery_tag)

    def ack_many(self, delivery_tags: list[Any]) -> None:
        """Acknowledge many messages with one round trip (the batch path)."""
        records = [(tag, self._record(tag)) for tag in delivery_tags]
        with self.channel.conn_or_acquire() as client:
            pipe = client.pipeline(transaction=False)
            for tag, record in records:
                if record is None:
                    self._remove_from_indices(tag, pipe)
                else:
                    pipe.lrem(record[0], -1, record[1])
            pipe.execute()
        for tag in delivery_tags:
            VirtualQoS.ack(self, tag)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        record = self._record(delivery_tag)
        if record is None:
            return super().reject(delivery_tag, requeue=requeue)
        plist, raw = record
        parsed = parse_processing_list(plist)
        assert parsed is not None
        with self.channel.conn_or_acquire() as client:
            # Back of its own queue, as kombu's reject(requeue=True) does.
            client.eval(SETTLE, 2, plist, parsed[1], raw, redelivered(raw),
                        "LPUSH" if requeue else "")
        VirtualQoS.ack(self, delivery_tag)

    def restore_unacked(self, client: Any = None) -> list[Any]:
        """Everything this channel holds goes back to its queues (a close, basic_recover)."""
        self._flush()
        for tag in self._delivered:
            self.channel.connection.fetched.pop(tag, None)
        self._delivered.clear()
        try:
            self.channel.restore_own()
        except Exception as exc:  # Redis is away: the sweep of a live consumer brings them back
            log.warning("could not requeue this consumer's messages; they come back once its "
                        "heartbeat expires", extra={"consumer": self.channel.consumer_id,
                                                   "error": str(exc)})
        return []

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        super().restore_visible(start, num, interval)
        try:
            self.channel.recover_abandoned()
        except self.channel.connection_errors:
            raise  # kombu skips this sweep and tries again
        except Exception as exc:  # e.g. a refused command: never stop the worker for it
            log.error("could not sweep for abandoned messages", extra={"error": str(exc)})
