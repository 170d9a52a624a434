"""The consumer's channel: its heartbeat, the sweep for consumers that are gone, and the
fetch that moves each message into a processing list before this process reads it."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from time import monotonic
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

from worker.redis_reliable.processing_lists import (
    ALIVE,
    FETCH,
    PREFIX,
    SETTLE,
    UNREADABLE,
    parse_processing_list,
    processing_list,
    requeue_list,
)
from worker.redis_reliable.qos import QoS

log = logging.getLogger("loyalty.broker")

#: Consumer ids of this process whose channel closed: their lists are recovered at once.
_closed: set[str] = set()


class Channel(kombu_redis.Channel):
    QoS = QoS

    #: Longest a BLMOVE waits on one queue before the consumer looks at all of them again:
    #: what a message on another queue may wait at most while every queue is empty.
    fetch_block_timeout = 0.25

    from_transport_options = (*kombu_redis.Channel.from_transport_options,  # type: ignore[assignment]
                              "fetch_block_timeout")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.global_keyprefix:
            raise ValueError("the reliable Redis transport does not support global_keyprefix")
        self.consumer_id = uuid.uuid4().hex
        self._pid = os.getpid()
        self._no_ack: set[str] = set()
        self._sent: tuple[str, str | None] | None = None
        self._block_next = False
        self._turn = 0
        self._alive_at: float | None = None
        self._swept_at = float("-inf")
        self._restored = False

    # -- heartbeat and recovery -------------------------------------------------------

    @property
    def heartbeat_ttl(self) -> int:
        return max(2, int(self.visibility_timeout))

    @property
    def heartbeat_period(self) -> float:
        return max(1.0, min(10.0, self.heartbeat_ttl / 4))

    def keep_alive(self, force: bool = False) -> None:
        """Refresh the heartbeat: at the first fetch (before anything is moved), then each
        period (the event loop's timer, or the next fetch when it is overdue)."""
        if self.closed or os.getpid() != self._pid:
            return
        now = monotonic()
        first = self._alive_at is None
        if not first and not force and now - self._alive_at < self.heartbeat_period:  # type: ignore[operator]
            return
        with self.conn_or_acquire() as client:
            client.set(ALIVE + self.consumer_id, dumps({"host": socket.gethostname(),
                                                        "pid": self._pid}),
                       ex=self.heartbeat_ttl)
        self._alive_at = now
        if first:
            self.recover_abandoned(force=True)

    def _own_lists(self, client: Any) -> Iterator[tuple[str, str]]:
        for key in client.scan_iter(match=f"{PREFIX}{self.consumer_id}.*", count=1000):
            name = bytes_to_str(key)
            parsed = parse_processing_list(name)
            if parsed is not None:
                yield name, parsed[1]

    def restore_own(self, final: bool = False) -> None:
        """Push back everything in this consumer's processing lists and end its heartbeat."""
        if self._restored or self._alive_at is None or os.getpid() != self._pid:
            return
        with self.conn_or_acquire() as client:
            moved = sum(requeue_list(client, name, source)
                        for name, source in list(self._own_lists(client)))
            client.delete(ALIVE + self.consumer_id)
        self._restored = final
        if moved:
            log.info("requeued the messages this consumer held", extra={
                "consumer": self.consumer_id, "messages": moved})

    def recover_abandoned(self, force: bool = False) -> int:
        """Requeue the processing lists of consumers that are gone; returns messages moved."""
        now = monotonic()
        if self._alive_at is None or (not force and now - self._swept_at
                                      < max(1, self.unacked_restore_interval)):
            return 0
        self._swept_at = now
        moved = 0
        with self.conn_or_acquire() as client:
            lists: dict[str, list[tuple[str, str]]] = {}
            for key in client.scan_iter(match=PREFIX + "*", count=1000):
                name = bytes_to_str(key)
                parsed = parse_processing_list(name)
                if parsed is not None and parsed[0] != self.consumer_id:
                    lists.setdefault(parsed[0], []).append((name, parsed[1]))
            owners = list(lists)
            pipe = client.pipeline(transaction=False)
            for owner in owners:
                pipe.exists(ALIVE + owner)
            for owner, alive in zip(owners, pipe.execute(), strict=True):
                if alive and owner not in _closed:
                    continue
                for name, source in lists[owner]:
                    moved += requeue_list(client, name, source)
        if moved:
            log.warning("requeued the messages of consumers that are gone", extra={
                "messages": moved, "consumers": len(lists)})
        return moved

    # -- fetching ---------------------------------------------------------------------

    def basic_consume(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        no_ack = kwargs.get("no_ack", args[0] if args else False)
        (self._no_ack.add if no_ack else self._no_ack.discard)(queue)
        return super().basic_consume(queue, *args, **kwargs)

    def _sources(self, queues: list[str]) -> list[tuple[str, bool]]:
        return list(dict.fromkeys((self._q_for_pri(queue, pri), queue not in self._no_ack)
                                  for pri in self.priority_steps for queue in queues))

    def _brpop_start(self, timeout: Any = None) -> None:
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        acked = [queue for queue in queues if queue not in self._no_ack]
        if not acked:  # nothing to protect: kombu's own BRPOP
            self._sent = ("BRPOP", None)
            return super()._brpop_start(timeout)
        self.keep_alive()
        if self._block_next:
            self._turn = (self._turn + 1) % len(acked)
            source = acked[self._turn]
            command: list[Any] = ["BLMOVE", source, processing_list(self.consumer_id, source),
                                  "RIGHT", "LEFT", min(self.fetch_block_timeout,
                                                       self.brpop_timeout or 1)]
            self._sent = ("BLMOVE", source)
        else:
            sources = self._sources(queues)
            keys = [k for source, ack in sources
                    for k in (source, processing_list(self.consumer_id, source) if ack else source)]
            command = ["EVAL", FETCH, len(keys), *keys, *("1" if ack else "0" for _s, ack in sources)]
            self._sent = ("EVAL", None)
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()  # type: ignore[assignment]
        self.client.connection.send_command(*command)

    def _brpop_read(self, **options: Any) -> Any:
        sent, self._sent = self._sent, None
        if sent is None or sent[0] == "BRPOP":
            return super()._brpop_read(**options)
        try:
            try:
                reply = self.client.parse_response(self.client.connection, sent[0], **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if sent[0] == "EVAL":
                self._block_next = not reply
                if not reply:
                    raise kombu_redis.Empty()
                source, item = bytes_to_str(reply[0]), reply[1]
            else:
                self._block_next = False
                if reply is None:
                    raise kombu_redis.Empty()
                source, item = str(sent[1]), reply
            self._deliver_fetched(source, item)
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]
            self._flush_brpop_reauth()

    def _deliver_fetched(self, source: str, item: bytes) -> None:
        queue = source.rsplit(self.sep, 1)[0]
        acked = queue not in self._no_ack
        plist = processing_list(self.consumer_id, source)
        try:
            payload = loads(bytes_to_str(item))
            tag = payload["properties"]["delivery_tag"]
        except Exception as exc:
            with self.conn_or_acquire() as client:
                if acked:
                    client.eval(SETTLE, 2, plist, UNREADABLE, item, item, "LPUSH")
                else:
                    client.lpush(UNREADABLE, item)
            log.error("a message on the broker is not a kombu message; kept in Redis",
                      extra={"queue": queue, "list": UNREADABLE, "error": str(exc)})
            raise kombu_redis.Empty() from None
        if acked:
            self.connection.fetched.setdefault(tag, []).append((plist, item))
        self._queue_cycle.rotate(queue)
        self.connection._deliver(payload, queue)

    def _get(self, queue: str, timeout: Any = None) -> Any:
        """basic_get: the same move, for one queue, synchronously."""
        self.keep_alive()
        sources = self._sources([queue])
        keys = [k for source, ack in sources
                for k in (source, processing_list(self.consumer_id, source) if ack else source)]
        with self.conn_or_acquire() as client:
            reply = client.eval(FETCH, len(keys), *keys,
                                *("1" if ack else "0" for _s, ack in sources))
        if not reply:
            raise kombu_redis.Empty()
        source, item = bytes_to_str(reply[0]), reply[1]
        payload = loads(bytes_to_str(item))
        if queue not in self._no_ack:
            self.connection.fetched.setdefault(payload["properties"]["delivery_tag"], []) \
                .append((processing_list(self.consumer_id, source), item))
        return payload

    def close(self) -> None:
        if not self.closed and self._alive_at is not None and os.getpid() == self._pid:
            _closed.add(self.consumer_id)  # known gone: recovered at once, not after its TTL
            try:
                self.restore_own(final=True)
            except Exception as exc:
                log.warning("could not requeue this consumer's messages; a live consumer "
                            "requeues them", extra={"consumer": self.consumer_id,
                                                    "error": str(exc)})
        super().close()
