"""Processing lists, where a consumer's fetched messages wait for their ack: their names,
the Lua scripts that move a message into one and out again, and putting a whole list
back on its queue.

A processing list is `_loyalty.fetch.<consumer>.<queue list>`: it names its consumer and
the exact list its messages came from, so a sweeper can put them back there.
"""

from __future__ import annotations

from typing import Any

from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads
from redis.exceptions import WatchError

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
