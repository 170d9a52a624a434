"""The event envelope subscribers receive, and when a failed webhook is tried again.

Pure: no I/O. The body is built once per event and stored with each webhook delivery,
so the broker message, every webhook and every retry carry the very same bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from loyalty.ledger.outbox import OutboxEvent


def envelope(event: OutboxEvent) -> dict[str, Any]:
    """`{id, type, occurred_at, account_id, contact_id, data}`: the public shape."""
    return {
        "id": str(event.id),
        "type": event.type,
        "occurred_at": event.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "account_id": str(event.account_id),
        "contact_id": event.contact_id,
        "data": event.data,
    }


def body(event: OutboxEvent) -> str:
    return json.dumps(envelope(event), separators=(",", ":"), sort_keys=True, default=str)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for a webhook delivery, for a bounded time."""

    first_delay: float
    max_delay: float
    retry_for: float

    def next_delay(self, attempts: int, started: datetime, now: datetime) -> float | None:
        """Seconds until the next attempt after `attempts` failed ones, or None to give up.

        Gives up once the next attempt would fall after `retry_for` seconds from `started`
        (the delivery's creation, or its last redelivery).
        """
        delay = min(self.max_delay, self.first_delay * 2 ** max(0, attempts - 1))
        elapsed = (now - started).total_seconds()
        if elapsed + delay > self.retry_for:
            return None
        return delay
