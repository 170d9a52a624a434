"""Handlers of the event tasks (queue `loyalty.events`).

Fresh messages of these tasks are taken in batches by `worker.batching` and never
reach these handlers; they run for retries, re-deliveries and with batching off
(LOYALTY_BATCH_SIZE=1), one message at a time, as a batch of one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loyalty.ledger import earning

if TYPE_CHECKING:
    from loyalty.ledger import EventOutcome, Ledger
    from schemas.events import ActivityEvent, OrderCompletedEvent, OrderRefundedEvent, SignupEvent


def signup(ledger: Ledger, event: SignupEvent) -> EventOutcome:
    return earning.outcome_of(earning.apply_events(ledger.engine, [event])[0])


def order_completed(ledger: Ledger, event: OrderCompletedEvent) -> EventOutcome:
    """The order's path to its SQL: `earning.apply_events` (one transaction),
    `events_work`, `_orders_round` (decides it), `earn_writes.EarnWrites.write` (sends the
    statements of `loyalty/ledger/statements.py`)."""
    return earning.outcome_of(earning.apply_events(ledger.engine, [event])[0])


def activity(ledger: Ledger, event: ActivityEvent) -> EventOutcome:
    return earning.outcome_of(earning.apply_events(ledger.engine, [event])[0])


def order_refunded(ledger: Ledger, event: OrderRefundedEvent) -> EventOutcome:
    """A refund takes back its order's points (`loyalty/ledger/reversing.py`)."""
    return earning.outcome_of(earning.apply_events(ledger.engine, [event])[0])
