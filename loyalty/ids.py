"""Time-ordered identifiers: UUIDv7 (RFC 9562), a millisecond timestamp, then random bits.

A key that grows with time lands on the right-hand edge of its B-tree, so a batch of new
rows dirties a few index pages; a random key (UUIDv4) dirties one random page per row,
which past the size of shared buffers is a page read, and after every checkpoint a whole
page written to the WAL (docs/scaling.md). The ledger uses them for its entries, and the
producer helper for the event ids it makes up, which key `processed_events` and the
ledger's event-id index.
"""

from __future__ import annotations

import os
import time
from uuid import UUID


def uuid7() -> UUID:
    unix_ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = ((unix_ms & (2**48 - 1)) << 80) | (0x7 << 76) | (((rand >> 62) & 0xFFF) << 64) \
        | (0b10 << 62) | (rand & (2**62 - 1))
    return UUID(int=value)
