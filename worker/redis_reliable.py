"""kombu's Redis transport with reliable fetch: a message is never only in process memory.

Stock kombu takes a message with `BRPOP` and only then records it as unacknowledged
(a second round trip, `QoS.append`): a SIGKILL of the consuming process, or Redis going
away, between the two loses it (kombu #305, celery #7950). This subclass changes only how
a consumer takes a message and how it settles it; producers are untouched (they `LPUSH`
to the queue's list as before), and so is everything else kombu does.

- **Fetch** moves the message, in one Redis command, from the queue's list into a
  processing list of this consumer (`_loyalty.fetch.<consumer>.<queue list>`): `LMOVE`
  inside a small Lua script that tries the queues in kombu's order (priority, then round
  robin) when something is waiting, else `BLMOVE` on one queue with a short timeout
  (`fetch_block_timeout`; Redis cannot block on several lists and move). Either way the
  message is in Redis, in a list that names its consumer and the exact list it came from,
  before a byte of it reaches this process.
- **Ack** removes it from that list (`LREM`, by its exact bytes); `QoS.ack_many` settles a
  whole batch in one pipeline. **Requeue** (reject) removes it and pushes it back to its own
  list, marked re-delivered, atomically (a Lua script). A clean close of the channel pushes
  everything in its processing lists back, as kombu restores its unacked messages.
- **A dead consumer**: each consumer keeps a heartbeat key (`_loyalty.fetch.alive.<consumer>`)
  that expires after `visibility_timeout` seconds and is refreshed every
  `min(10, visibility_timeout / 4)` seconds by the event loop. Every live consumer sweeps
  (each `unacked_restore_interval`) for processing lists whose owner has no heartbeat, or
  whose channel in this very process is closed, and pushes their messages back to the lists
  they came from (oldest first to be taken again, marked re-delivered), in `WATCH`/`MULTI`
  transactions so that two sweepers never move one message twice.

So `visibility_timeout` keeps its meaning for a consumer that is gone (its messages come
back after it) but no longer re-delivers a message that a live consumer still holds (an
ETA retry, a full buffer). kombu's own unacked records are still swept for messages that
other (stock) consumers of the same Redis recorded. docs/design.md tells what happens at
each step if the process or Redis dies there.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from time import monotonic
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport.virtual import QoS as VirtualQoS
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads
from redis.exceptions import WatchError

log = logging.getLogger("loyalty.broker")

PREFIX = "_loyalty.fetch."
ALIVE = PREFIX + "alive."
#: Items that are not kombu messages at all (not JSON, no delivery tag): kept here, not lost.
UNREADABLE = PREFIX + "unreadable"

#: Take the first waiting message: KEYS are (queue list, processing list) pairs in the order
#: to try; ARGV[n] is "1" when the n-th queue is consumed with acknowledgements (moved to
#: its processing list) and "0" when not (popped, as kombu would).
FETCH = """
for i = 1, #KEYS, 2 do
  local item
  if ARGV[(i + 1) / 2] == '1' then
    item = redis.call('LMOVE', KEYS[i], KEYS[i + 1], 'RIGHT', 'LEFT')
  else
    item = redis.call('RPOP', KEYS[i])
  end
  if item then return {KEYS[i], item} end
end
return false
"""

#: Settle one message: remove it from its processing list (KEYS[1]) and, if it was still
#: there, push ARGV[2] to KEYS[2] (LPUSH or RPUSH, ARGV[3]); an empty ARGV[3] only removes.
SETTLE = """
local removed = redis.call('LREM', KEYS[1], -1, ARGV[1])
if removed > 0 and ARGV[3] ~= '' then redis.call(ARGV[3], KEYS[2], ARGV[2]) end
return removed
"""

#: Consumer ids of this process whose channel closed: their lists are recovered at once.
_closed: set[str] = set()


def processing_list(consumer: str, source: str) -> str:
    return f"{PREFIX}{consumer}.{source}"


def parse_processing_list(key: str) -> tuple[str, str] | None:
    """(consumer, queue list) of a processing list's name; consumer ids are 32 hex digits."""
    rest = key[len(PREFIX):]
    if not key.startswith(PREFIX) or len(rest) < 34 or rest[32] != ".":
        return None
    consumer = rest[:32]
    if any(c not in "0123456789abcdef" for c in consumer):
        return None
    return consumer, rest[33:]


def redelivered(raw: bytes | str) -> str | bytes:
    """The message marked as delivered before, as kombu marks what it restores."""
    try:
        payload = loads(bytes_to_str(raw))
        payload["headers"]["redelivered"] = True
        payload["properties"]["delivery_info"]["redelivered"] = True
    except Exception:
        return raw
    return str(dumps(payload))


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


def requeue_list(client: Any, name: str, source: str, chunk: int = 100) -> int:
    """Move a processing list back to the queue list it came from; returns messages moved.

    Newest first to the consuming end, so the oldest is taken again first, each marked
    re-delivered. WATCH makes a concurrent ack, fetch or second sweeper retry the chunk.
    """
    moved = 0
    while True:
        with client.pipeline() as pipe:
            try:
                pipe.watch(name)
                items = pipe.lrange(name, 0, chunk - 1)
                if not items:
                    return moved
                pipe.multi()
                pipe.ltrim(name, len(items), -1)
                pipe.rpush(source, *(redelivered(item) for item in items))
                pipe.execute()
                moved += len(items)
            except WatchError:
                continue


class Transport(kombu_redis.Transport):
    Channel = Channel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: delivery tag -> (processing list, the message's exact bytes), for its ack.
        self.fetched: dict[Any, list[tuple[str, bytes]]] = {}

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        super().register_with_event_loop(connection, loop)
        cycle: Any = self.cycle
        old = getattr(cycle, "_loyalty_heartbeat_tref", None)
        if old is not None:
            old.cancel()
        timeout = connection.client.transport_options.get(
            "visibility_timeout", Channel.visibility_timeout)
        period = max(1.0, min(10.0, max(2, int(timeout)) / 4))
        cycle._loyalty_heartbeat_tref = loop.call_repeatedly(period, self._heartbeat)

    def _heartbeat(self) -> None:
        cycle: Any = self.cycle
        for channel in list(cycle._channels):
            if isinstance(channel, Channel) and channel._alive_at is not None:
                try:
                    channel.keep_alive(force=True)
                except Exception as exc:  # Redis away: the next beat, or the reconnection
                    log.warning("heartbeat not sent", extra={"error": str(exc)})
