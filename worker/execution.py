"""What every task does with its outcome: done, retry or dead-letter.

Tasks stay one line long; the policy lives here once. Nothing is dropped:
anything that is not applied is either retried or written to the dead-letter
table with the reason, and no exception escapes to crash a worker process.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from celery import Task
from pydantic import ValidationError

from loyalty.errors import InvalidPayload, LoyaltyError, TransientError
from loyalty.ledger import Ledger
from loyalty.retry import backoff_seconds, should_retry
from schemas.events import Contract, describe_errors
from worker.app import ledger, settings

log = logging.getLogger("loyalty.tasks")

M = TypeVar("M", bound=Contract)


def parse(model: type[M], args: tuple[Any, ...], kwargs: dict[str, Any]) -> M:
    """The contract: exactly one positional argument, a JSON object valid for `model`."""
    if kwargs or len(args) != 1 or not isinstance(args[0], dict):
        raise InvalidPayload("the task takes exactly one positional argument, a JSON object")
    try:
        return model.model_validate(args[0])
    except ValidationError as exc:
        raise InvalidPayload(describe_errors(exc)) from None


def run(task: Task, model: type[M], apply: Callable[[Ledger, M], Any],
        args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Apply one message; on failure retry or dead-letter, and return a JSON-able result."""
    try:
        message = parse(model, args, kwargs)
        result = apply(ledger(), message)
    except TransientError as exc:
        retries = task.request.retries or 0
        if should_retry(retries, settings().max_retries):
            delay = backoff_seconds(retries, cap=settings().retry_backoff_max)
            log.warning("transient failure, retrying", extra={
                "task": task.name, "task_id": task.request.id, "retries": retries,
                "delay_s": delay, "error": str(exc)})
            raise task.retry(countdown=delay, max_retries=settings().max_retries) from None
        return dead_letter(task, args, kwargs, "retries_exhausted", str(exc))
    except LoyaltyError as exc:
        return dead_letter(task, args, kwargs, exc.reason, str(exc))
    except Exception as exc:  # a bug must not lose the message
        log.exception("unexpected failure", extra={"task": task.name, "task_id": task.request.id})
        return dead_letter(task, args, kwargs, "internal_error", f"{type(exc).__name__}: {exc}")
    payload = result.as_dict() if hasattr(result, "as_dict") else result
    log.info("processed", extra={"task": task.name, "task_id": task.request.id, "result": payload})
    return payload


def dead_letter(task: Task, args: tuple[Any, ...], kwargs: dict[str, Any], reason: str,
                detail: str) -> dict[str, Any]:
    request = task.request
    body = json.dumps([list(args), kwargs], default=repr)
    headers = {
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
        delay = backoff_seconds(request.retries or 0, cap=settings().retry_backoff_max)
        log.error("cannot dead-letter yet, retrying", extra={
            "task": task.name, "task_id": request.id, "error": str(exc)})
        raise task.retry(countdown=delay, max_retries=None) from None
    log.warning("dead-lettered", extra={"task": task.name, "task_id": request.id,
                                         "reason": reason, "detail": detail,
                                         "dead_letter_id": letter_id})
    return {"status": "dead_lettered", "reason": reason, "detail": detail,
            "dead_letter_id": letter_id}
