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

The package: `processing_lists` (their names, the Lua scripts, and moving a list back to
its queue), `qos` (acknowledgements), `channel` (heartbeat, recovery and fetching) and
`transport`, which `worker.config` names as `worker.redis_reliable:Transport`.
"""

from worker.redis_reliable.channel import Channel
from worker.redis_reliable.processing_lists import (
    ALIVE,
    FETCH,
    PREFIX,
    SETTLE,
    UNREADABLE,
    parse_processing_list,
    processing_list,
    redelivered,
    requeue_list,
)
from worker.redis_reliable.qos import QoS
from worker.redis_reliable.transport import Transport

__all__ = [
    "ALIVE",
    "FETCH",
    "PREFIX",
    "SETTLE",
    "UNREADABLE",
    "Channel",
    "QoS",
    "Transport",
    "parse_processing_list",
    "processing_list",
    "redelivered",
    "requeue_list",
]
