"""Event tasks on queue `loyalty.events`.

Fresh messages of these tasks are taken in batches by `worker.batching` and never
reach these bodies; the bodies run for retries, re-deliveries and with batching
off (LOYALTY_BATCH_SIZE=1), one message at a time.
"""

from typing import Any

from celery import Task

from schemas.events import BulkEvents, OrderCompletedEvent, SignupEvent
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


@app.task(name="loyalty.events.bulk", bind=True, Strategy=BATCHED)
def bulk(self: Task, *args: Any, **kwargs: Any) -> Any:
    return run_bulk(self, BulkEvents, args, kwargs)
