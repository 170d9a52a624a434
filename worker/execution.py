"""What every task does with its outcome: done, retry or dead-letter.

Tasks stay one line long; the policy lives here once. Nothing is dropped:
anything that is not applied is either retried or written to the dead-letter
table with the reason, and no exception escapes to crash a worker process.

| failure                    | what happens                                              |
|----------------------------|-----------------------------------------------------------|
| invalid payload            | dead-lettered at once, never retried                      |
| account not found          | retried (LOYALTY_NOT_FOUND_RETRIES), then dead-lettered   |
| transient (database down)  | retried (LOYALTY_MAX_RETRIES), then `retries_exhausted`   |
| idempotency conflict, etc. | dead-lettered at once                                     |
| a bug                      | dead-lettered as `internal_error`                         |
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from loyalty.errors import AccountNotFound, InvalidPayload, LoyaltyError, TransientError
from loyalty.ledger import Ledger
from loyalty.retry import backoff_seconds, should_retry
from schemas.events import Contract, PayloadError, parse_task_args
from worker.app import ledger, settings

log = logging.getLogger("loyalty.tasks")

M = TypeVar("M", bound=Contract)


def run(task: Task, model: type[M], apply: Callable[[Ledger, M], Any],
        args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Apply one message; on failure retry or dead-letter, and return a JSON-able result."""
    retries = task.request.retries or 0
    try:
        try:
            message = parse_task_args(model, args, kwargs)
        except PayloadError as exc:
            raise InvalidPayload(str(exc)) from None
        result = apply(ledger(), message)
    except AccountNotFound as exc:
        # Often the signup is still in flight: wait for it before giving up.
        if should_retry(retries, settings().not_found_retries):
            return retry(task, exc, backoff_seconds(retries, cap=settings().retry_backoff_max,
                                                    base=settings().not_found_backoff))
        return dead_letter(task, args, kwargs, exc.reason, str(exc))
    except (TransientError, SoftTimeLimitExceeded) as exc:
        if should_retry(retries, settings().max_retries):
            return retry(task, exc, backoff_seconds(retries, cap=settings().retry_backoff_max))
        return dead_letter(task, args, kwargs, "retries_exhausted", str(exc))
    except LoyaltyError as exc:
        return dead_letter(task, args, kwargs, exc.reason, str(exc))
    except Exception as exc:  # a bug must not lose the message
        log.exception("unexpected failure", extra={"task": task.name, "task_id": task.request.id})
        return dead_letter(task, args, kwargs, "internal_error", f"{type(exc).__name__}: {exc}")
    payload = result.as_dict() if hasattr(result, "as_dict") else result
    _log_outcome(task, payload)
    return payload


def _log_outcome(task: Task, payload: Any) -> None:
    """One line that says what happened, with the facts and not whole documents."""
    where = {"task": task.name, "task_id": task.request.id}
    if not isinstance(payload, dict):
        log.info("processed", extra=where)
    elif "outcome" in payload:  # an event
        if payload.get("outcome") == "duplicate_order_changed" and not payload.get("duplicate"):
            log.warning("order re-sent with another total", extra={**where, **payload})
        else:
            log.info("duplicate" if payload.get("duplicate") else "applied",
                     extra={**where, **payload})
    elif "status" in payload and "account" in payload:  # an adjustment
        account = payload.get("account") or {}
        log.info(f"adjustment {payload['status']}", extra={
            **where, "status": payload["status"], "reason": payload.get("reason"),
            "transaction_id": payload.get("transaction_id"), "account_id": account.get("id"),
            "contact_id": account.get("contact_id"),
            "balance": (account.get("points") or {}).get("balance"),
            "revision": account.get("revision")})
    elif "summary" in payload:  # a replay
        log.info("replay done", extra={**where, "dry_run": payload.get("dry_run"),
                                       **{f"replay_{k}": v for k, v in payload["summary"].items()}})
    else:
        log.info("processed", extra=where)


def retry(task: Task, exc: BaseException, delay: float) -> Any:
    log.warning("not applied yet, retrying", extra={
        "task": task.name, "task_id": task.request.id, **_about(task.request.args),
        "reason": getattr(exc, "reason", type(exc).__name__), "retries": task.request.retries,
        "delay_s": round(delay, 3), "error": str(exc)})
    raise task.retry(countdown=delay, max_retries=None)


def _about(args: Any) -> dict[str, Any]:
    """Which event or request and whose, for a log line, from arguments that may be invalid."""
    payload = args[0] if isinstance(args, list | tuple) and len(args) == 1 else None
    if not isinstance(payload, dict):
        return {}
    return {k: payload[k] for k in ("event_id", "request_id", "contact_id", "order_id")
            if isinstance(payload.get(k), str)}


def dead_letter(task: Task, args: tuple[Any, ...], kwargs: dict[str, Any], reason: str,
                detail: str) -> dict[str, Any]:
    request = task.request
    # Celery's own body shape, so a replay reads every letter the same way.
    body = json.dumps([list(args), kwargs, {}], default=repr)
    headers = {
        "content_type": "application/json",
        "retries": request.retries,
        "delivery_info": request.delivery_info or {},
        "origin": getattr(request, "origin", None),
    }
    try:
        letter_id = ledger().add_dead_letter(
            task_name=task.name, message_id=request.id, payload=body, headers=headers,
            reason=reason, error_detail=detail,
        )
    except TransientError as exc:
        # The store itself is down: keep the message alive on the broker instead.
        return retry(task, exc, backoff_seconds(request.retries or 0,
                                                cap=settings().retry_backoff_max))
    log.warning("dead-lettered", extra={"task": task.name, "task_id": request.id,
                                         **_about(args), "reason": reason, "detail": detail,
                                         "dead_letter_id": letter_id})
    return {"status": "dead_lettered", "reason": reason, "detail": detail,
            "dead_letter_id": letter_id}


def run_bulk(task: Task, model: type[Contract], args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> Any:
    """A bulk message taken alone (a re-delivery, or batching off): the batch path, once."""
    from worker import batching

    request = task.request
    item = {"task": task.name, "id": request.id, "args": list(args), "kwargs": kwargs,
            "retries": request.retries or 0,
            "body": json.dumps([list(args), kwargs, {}], default=repr),
            "delivery_info": request.delivery_info or {}}
    if batching.apply_batch([item]) == [batching.ACK]:
        return {"status": "applied"}
    retries = request.retries or 0
    if should_retry(retries, settings().max_retries):
        return retry(task, TransientError("the database is unavailable"),
                     backoff_seconds(retries, cap=settings().retry_backoff_max))
    return dead_letter(task, args, kwargs, "retries_exhausted", "the database stayed unavailable")
