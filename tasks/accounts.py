"""Staff adjustments on queue `loyalty.admin`; the caller reads the result back."""

from typing import Any

from celery import Task

from schemas.events import AdjustPointsRequest
from worker.app import app
from worker.execution import run


@app.task(name="loyalty.accounts.adjust_points", bind=True, ignore_result=False)
def adjust_points(self: Task, *args: Any, **kwargs: Any) -> Any:
    result = run(self, AdjustPointsRequest, lambda ledger, req: ledger.adjust_points(req),
                 args, kwargs)
    if result.get("status") == "dead_lettered":
        # The caller is waiting for an answer in the contract's shape.
        return {"status": "rejected", "reason": result["reason"], "detail": result["detail"],
                "account": None}
    return result
