"""Staff requests on queue `loyalty.admin`; the caller reads the result back."""

from typing import Any

from celery import Task

from loyalty.ledger import Ledger
from schemas.events import (
    AdjustPointsRequest,
    CreateAccountRequest,
    EarnPointsRequest,
    RedeemPointsRequest,
    RefundTransactionRequest,
)
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


def _answer(result: Any) -> Any:
    """A dead-lettered request (invalid, or a conflict) answered in the contract's shape."""
    if isinstance(result, dict) and result.get("status") == "dead_lettered":
        return {"status": "rejected", "reason": result["reason"], "detail": result["detail"],
                "account": None}
    return result


def create_account(ledger: Ledger, request: CreateAccountRequest) -> dict[str, Any]:
    return ledger.create_account(request)


def earn_points(ledger: Ledger, request: EarnPointsRequest) -> dict[str, Any]:
    return ledger.earn_points(request)


def redeem_points(ledger: Ledger, request: RedeemPointsRequest) -> dict[str, Any]:
    return ledger.redeem_points(request)


def refund_transaction(ledger: Ledger, request: RefundTransactionRequest) -> dict[str, Any]:
    return ledger.refund_transaction(request)


@app.task(name="loyalty.accounts.create", bind=True, ignore_result=False)
def create(self: Task, *args: Any, **kwargs: Any) -> Any:
    return _answer(run(self, CreateAccountRequest, create_account, args, kwargs))


@app.task(name="loyalty.accounts.earn_points", bind=True, ignore_result=False)
def earn(self: Task, *args: Any, **kwargs: Any) -> Any:
    return _answer(run(self, EarnPointsRequest, earn_points, args, kwargs))


@app.task(name="loyalty.accounts.redeem_points", bind=True, ignore_result=False)
def redeem(self: Task, *args: Any, **kwargs: Any) -> Any:
    return _answer(run(self, RedeemPointsRequest, redeem_points, args, kwargs))


@app.task(name="loyalty.accounts.refund_transaction", bind=True, ignore_result=False)
def refund(self: Task, *args: Any, **kwargs: Any) -> Any:
    return _answer(run(self, RefundTransactionRequest, refund_transaction, args, kwargs))
