"""Failure handling in the worker's main process, for failures outside the task body.

Inside the task, `worker.execution` catches everything. What is left happens
around it: the pool process was killed (a crash, the OOM killer, the hard time
limit) or Celery could not even unpack the body. Stock Celery either redelivers
such a message forever (a poison message loops) or acknowledges it (it is lost).
Here a crash is counted in PostgreSQL, and `loyalty.policy` decides: the message
is redelivered until it has crashed LOYALTY_POISON_DELIVERIES times and is then
dead-lettered as `poison`.
"""

from __future__ import annotations

import logging
from typing import Any

from billiard.einfo import ExceptionWithTraceback
from billiard.exceptions import WorkerLostError
from celery.exceptions import Ignore, Reject, Retry, TimeLimitExceeded
from celery.worker.request import Request

from loyalty import policy
from loyalty.errors import TransientError
from worker import raw_letters
from worker.app import ledger, settings

log = logging.getLogger("loyalty.worker")


class LoyaltyRequest(Request):
    def on_failure(self, exc_info: Any, send_failed_event: bool = True,
                   return_ok: bool = False) -> Any:
        exc = exc_info.exception
        if isinstance(exc, ExceptionWithTraceback):
            exc = exc.exc
        cancelled = self._already_cancelled or self._already_revoked
        if isinstance(exc, Reject | Ignore | Retry | MemoryError) or (
                isinstance(exc, SystemExit | KeyboardInterrupt) and cancelled) \
                or type(exc).__name__ == "Terminated":
            return super().on_failure(exc_info, send_failed_event, return_ok)
        crashed = isinstance(exc, WorkerLostError | TimeLimitExceeded | SystemExit
                             | KeyboardInterrupt)
        detail = f"{type(exc).__name__}: {exc}"
        try:
            if crashed:
                crashes = ledger().record_crash(self.id, self.name, detail)
                decision = policy.after_crash(crashes, policy.Limits.of(settings()), detail)
                if decision.action is policy.Action.REQUEUE:
                    log.error("worker process lost, message will be delivered again",
                              extra={"task": self.name, "task_id": self.id, "crashes": crashes,
                                     "error": detail})
                    return self.reject(requeue=True)
            else:
                # Celery could not even unpack the message for its task.
                decision = policy.Decision(policy.Action.DEAD_LETTER, "malformed_message", detail)
            assert decision.reason is not None
            raw_letters.store(self.message, decision.reason, decision.detail,
                              task_name=self.name)
        except TransientError as err:
            log.error("cannot count or dead-letter yet, requeueing",
                      extra={"task_id": self.id, "error": str(err)})
            return self.reject(requeue=True)
        self.acknowledge()
        if not self.task.ignore_result:
            self.task.backend.mark_as_failure(self.id, exc, request=self._context,
                                              store_result=self.store_errors)
        return None
