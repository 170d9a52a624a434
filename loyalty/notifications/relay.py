"""The relay: a loop that sends outgoing events out, as its own process (`loyalty relay`).

Why a loop and not a Celery beat task: the relay's work is a few SQL statements and
publishes, every half second when idle and back to back when busy. A beat task would cost
a broker round trip per tick, queue up behind event batches on the same workers (adding
their latency to every notification), and pile up when a pass outlasts its period. As a
process of its own it is scaled and restarted independently of the worker, and its
correctness does not depend on there being one: several relays share the work through
row locks (`loyalty.ledger.outbox`, `loyalty.ledger.webhooks`) without ever reordering
an account's events.

Each pass: (1) up to LOYALTY_RELAY_BATCH_SIZE outbox events are published to
`loyalty.notifications`, fanned out to webhook subscriptions and marked delivered, in one
transaction; (2) the webhook deliveries that are due are sent; (3) once a minute,
delivered rows older than LOYALTY_OUTBOX_RETENTION are pruned.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

from loyalty import metrics
from loyalty.ledger import Ledger
from loyalty.ledger.outbox import OutboxEvent
from loyalty.ledger.webhooks import Due
from loyalty.notifications.broker import NotificationPublisher
from loyalty.notifications.events import RetryPolicy, body
from loyalty.notifications.sender import WebhookSender
from loyalty.settings import Settings

log = logging.getLogger("loyalty.relay")

#: Webhook deliveries sent per transaction: their rows stay locked while they are sent.
WEBHOOKS_PER_PASS = 50
PRUNE_EVERY = 60.0


class Relay:
    def __init__(self, settings: Settings, ledger: Ledger) -> None:
        self.settings = settings
        self.ledger = ledger
        self.publisher = NotificationPublisher(settings.broker_url)
        self.sender = WebhookSender(settings.webhook_timeout, settings.webhook_allow_private)
        self.policy = RetryPolicy(settings.webhook_backoff, settings.webhook_backoff_max,
                                  settings.webhook_retry_for)
        self._last_prune = 0.0

    def publish_pass(self) -> int:
        def deliver(events: list[OutboxEvent]) -> list[str]:
            bodies = [body(e) for e in events]
            for event, text in zip(events, bodies, strict=True):
                self.publisher.publish(str(event.id), event.type, text)
            self.publisher.flush()
            return bodies

        events = self.ledger.relay_events(self.settings.relay_batch_size, deliver)
        if events:
            metrics.published([e.type for e in events])
            log.info("events published", extra={"events": len(events)})
        return len(events)

    def webhook_pass(self) -> int:
        def send(due: Due) -> tuple[bool, int | None, str]:
            attempt = self.sender.send(due)
            return attempt.ok, attempt.status_code, attempt.error

        def retry_in(due: Due) -> float | None:
            return self.policy.next_delay(due.attempts + 1, due.retry_from, datetime.now(UTC))

        done = self.ledger.send_due_webhooks(WEBHOOKS_PER_PASS, send, retry_in)
        for due, ok in done:
            metrics.webhook_attempt("delivered" if ok else "failed_attempt")
            if not ok:
                log.warning("webhook delivery failed", extra={
                    "delivery_id": due.id, "subscription_id": due.subscription_id,
                    "event_id": str(due.event_id), "attempts": due.attempts + 1})
        return len(done)

    def prune_pass(self, force: bool = False) -> dict[str, int]:
        now = time.monotonic()
        if not force and now - self._last_prune < PRUNE_EVERY:
            return {}
        self._last_prune = now
        pruned = self.ledger.prune_outbox(self.settings.outbox_retention)
        if any(pruned.values()):
            log.info("outbox pruned", extra=pruned)
        return pruned

    def run_once(self) -> int:
        """One pass of each kind; returns how much work it found."""
        work = self.publish_pass() + self.webhook_pass()
        self.prune_pass()
        return work

    def drain(self, timeout: float) -> None:
        """Passes until nothing is left that is due now (or the timeout)."""
        deadline = time.monotonic() + timeout
        while self.run_once() and time.monotonic() < deadline:
            pass

    def run_forever(self, stop: threading.Event) -> None:
        idle = self.settings.relay_interval_ms / 1000
        failures = 0
        while not stop.is_set():
            try:
                worked = self.run_once()
                failures = 0
            except Exception as exc:
                # The broker or the database is away: nothing was marked delivered, so
                # nothing is lost; try again, a little later each time.
                failures += 1
                self.publisher.reset()
                log.error("relay pass failed: %s", exc, extra={"failures": failures})
                stop.wait(min(30.0, idle * 2 ** min(failures, 6)))
                continue
            if not worked:
                stop.wait(idle)

    def close(self) -> None:
        self.publisher.close()
        self.sender.close()
