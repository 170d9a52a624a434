"""Handlers of the event tasks (queue `loyalty.events`).

Fresh messages of these tasks are taken in batches by `worker.batching` and never
reach these handlers; they run for retries, re-deliveries and with batching off
(LOYALTY_BATCH_SIZE=1), one message at a time, as a batch of one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loyalty.ledger import EventOutcome, Ledger
    from schemas.events import OrderCompletedEvent, SignupEvent


def signup(ledger: Ledger, event: SignupEvent) -> EventOutcome:
    return ledger.apply_signup(event)


def order_completed(ledger: Ledger, event: OrderCompletedEvent) -> EventOutcome:
    return ledger.apply_order(event)
