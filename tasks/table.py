"""The task table: every task the worker runs, in one place.

Each entry names a task by its payload model (its name and queue are the contract's,
`schemas.events.TASKS`), the named function that applies it, and how the worker takes
it. Everything else derives from this table: the Celery tasks and their routes, the
queues the worker declares and consumes (`worker.config`), the tasks whose fresh
messages are batched (`worker.batching`), and the tasks whose dead letters can be
replayed (`loyalty.replay`).

Adding a task: its payload model (`schemas/events.py` or `schemas/requests.py`) and its
`TASKS` entry in `schemas/events.py`, one `Task` entry below, one handler in the module
of its group (docs/design.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schemas.events import (
    TASK_OF,
    TASKS,
    ActivatePointsRequest,
    ActivityEvent,
    AdjustPointsRequest,
    BulkEvents,
    Contract,
    CreateAccountRequest,
    EarnPointsRequest,
    ExpirePointsRequest,
    OrderCompletedEvent,
    OrderRefundedEvent,
    RecalculateTiersRequest,
    RedeemPointsRequest,
    RefundTransactionRequest,
    ReplayRequest,
    SignupEvent,
)
from tasks import accounts, deadletters, events, program

#: A handler applies one parsed payload: `(ledger, payload) -> result`. It raises a
#: `LoyaltyError` for what cannot be applied; the outcome policy does the rest.
Handler = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class Task:
    """One task of the worker."""

    #: The payload model; the task's name and queue are the contract's.
    model: type[Contract]
    #: What applies a message taken alone. None only for the bulk task, whose items are
    #: events of the batched tasks and are always applied by the batch job.
    handler: Handler | None
    #: Fresh messages are taken in batches by `worker.batching` (events only).
    batched: bool = False
    #: The producer waits for the result (Celery's ignore_result=False).
    answers: bool = False
    #: A dead letter of this task can be replayed (`loyalty dlq replay`).
    replayable: bool = True
    #: What the producer is answered when the message is dead-lettered.
    on_dead_letter: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    @property
    def name(self) -> str:
        return TASK_OF[self.model]

    @property
    def queue(self) -> str:
        return TASKS[self.name][0]


TABLE: tuple[Task, ...] = (
    Task(SignupEvent, events.signup, batched=True),
    Task(OrderCompletedEvent, events.order_completed, batched=True),
    Task(ActivityEvent, events.activity, batched=True),
    Task(OrderRefundedEvent, events.order_refunded, batched=True),
    Task(BulkEvents, None, batched=True, replayable=False),
    Task(AdjustPointsRequest, accounts.adjust_points, answers=True,
         on_dead_letter=accounts.rejected),
    Task(CreateAccountRequest, accounts.create_account, answers=True,
         on_dead_letter=accounts.rejected, replayable=False),
    Task(EarnPointsRequest, accounts.earn_points, answers=True,
         on_dead_letter=accounts.rejected, replayable=False),
    Task(RedeemPointsRequest, accounts.redeem_points, answers=True,
         on_dead_letter=accounts.rejected, replayable=False),
    Task(RefundTransactionRequest, accounts.refund_transaction, answers=True,
         on_dead_letter=accounts.rejected, replayable=False),
    Task(ReplayRequest, deadletters.replay, answers=True, replayable=False),
    # Periodic (`loyalty beat`); idempotent, so a dead letter is simply the next run's work.
    Task(ActivatePointsRequest, program.activate_points, answers=True, replayable=False),
    Task(ExpirePointsRequest, program.expire_points, answers=True, replayable=False),
    Task(RecalculateTiersRequest, program.recalculate_tiers, answers=True, replayable=False),
)

BY_NAME: dict[str, Task] = {task.name: task for task in TABLE}
#: Tasks whose fresh messages go through the batch path.
BATCHED: frozenset[str] = frozenset(task.name for task in TABLE if task.batched)
#: The bulk task: one message carrying many events of the batched tasks.
BULK: str = TASK_OF[BulkEvents]
#: Tasks whose dead letters `loyalty dlq replay` can run again.
REPLAYABLE: frozenset[str] = frozenset(task.name for task in TABLE if task.replayable)


def routes() -> dict[str, dict[str, str]]:
    """Celery routes, one pattern per group of names (`loyalty.events.*`): a task of a
    group (even one this worker does not know) runs only from its group's queue."""
    found: dict[str, dict[str, str]] = {}
    for task in TABLE:
        pattern = task.name.rsplit(".", 1)[0] + ".*"
        if found.setdefault(pattern, {"queue": task.queue})["queue"] != task.queue:
            raise ValueError(f"the tasks of {pattern} run from more than one queue")
    return found


def _check() -> None:
    """The table and the contract name the same tasks: none is left without a handler."""
    missing = set(TASKS) - set(BY_NAME)
    if missing or len(BY_NAME) != len(TABLE):
        raise ValueError(f"tasks.table does not match schemas.events.TASKS: {sorted(missing)}")
    routes()


_check()
