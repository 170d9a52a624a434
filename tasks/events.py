"""Event tasks on queue `loyalty.events`.

Fresh messages of these tasks are taken in batches by `worker.batching` and never
reach these bodies; the bodies run for retries, re-deliveries and with batching
off (LOYALTY_BATCH_SIZE=1), one message at a time.
"""

from typing import Any

from celery import Task

from loyalty.ledger import EventOutcome, Ledger
from schemas.events import (
    ActivityEvent,
    BulkEvents,
    OrderCompletedEvent,
    OrderRefundedEvent,
    SignupEvent,
)
from worker.app import app
from worker.execution import run, run_bulk

BATCHED = "worker.batching:strategy"


@app.task(name="loyalty.events.signup", bind=True, Strategy=BATCHED)
def signup(self: Task, *args: Any, **kwargs: Any) -> Any:
    return run(self, SignupEvent, lambda ledger, event: ledger.apply_signup(event), args, kwargs)


@app.task(name="loyalty.events.order_completed", bind=True, Strategy=BATCHED)
def order_completed(self: Task, *args: Any, **kwargs: Any) -> Any:
    return run(self, OrderCompletedEvent, lambda ledger, event: ledger.apply_order(event),
               args, kwargs)


def apply_activity(ledger: Ledger, event: ActivityEvent) -> EventOutcome:
    return ledger.apply_activity(event)


def apply_refund(ledger: Ledger, event: OrderRefundedEvent) -> EventOutcome:
    return ledger.apply_refund(event)


@app.task(name="loyalty.events.activity", bind=True, Strategy=BATCHED)
def activity(self: Task, *args: Any, **kwargs: Any) -> Any:
    return run(self, ActivityEvent, apply_activity, args, kwargs)


@app.task(name="loyalty.events.order_refunded", bind=True, Strategy=BATCHED)
def order_refunded(self: Task, *args: Any, **kwargs: Any) -> Any:
    return run(self, OrderRefundedEvent, apply_refund, args, kwargs)


@app.task(name="loyalty.events.bulk", bind=True, Strategy=BATCHED)
def bulk(self: Task, *args: Any, **kwargs: Any) -> Any:
    return run_bulk(self, BulkEvents, args, kwargs)
