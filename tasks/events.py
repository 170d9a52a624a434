"""Event tasks on queue `loyalty.events`."""

from typing import Any

from celery import Task

from schemas.events import OrderCompletedEvent, SignupEvent
from worker.app import app
from worker.execution import run


@app.task(name="loyalty.events.signup", bind=True)
def signup(self: Task, *args: Any, **kwargs: Any) -> Any:
    return run(self, SignupEvent, lambda ledger, event: ledger.apply_signup(event), args, kwargs)


@app.task(name="loyalty.events.order_completed", bind=True)
def order_completed(self: Task, *args: Any, **kwargs: Any) -> Any:
    return run(self, OrderCompletedEvent, lambda ledger, event: ledger.apply_order(event),
               args, kwargs)
