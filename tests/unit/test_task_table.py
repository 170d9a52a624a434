"""The task table is the one source of the worker's wiring."""

from __future__ import annotations

import subprocess
import sys

from schemas.events import ADMIN_QUEUE, EVENTS_QUEUE, QUEUES, TASKS
from tasks.table import BATCHED, BULK, BY_NAME, REPLAYABLE, TABLE, routes


def test_every_task_of_the_contract_has_one_entry_with_a_named_handler() -> None:
    assert set(BY_NAME) == set(TASKS)
    assert len(TABLE) == len(TASKS)
    for task in TABLE:
        assert TASKS[task.name] == (task.queue, task.model)
        if task.name != BULK:
            assert task.handler is not None and task.handler.__name__ != "<lambda>"


def test_what_derives_from_the_table() -> None:
    assert {"loyalty.events.signup", "loyalty.events.order_completed",
                       "loyalty.events.bulk"} == BATCHED
    assert {"loyalty.events.signup", "loyalty.events.order_completed",
                          "loyalty.accounts.adjust_points"} == REPLAYABLE
    assert QUEUES == (EVENTS_QUEUE, ADMIN_QUEUE)
    assert routes() == {"loyalty.events.*": {"queue": "loyalty.events"},
                        "loyalty.accounts.*": {"queue": "loyalty.admin"},
                        "loyalty.deadletters.*": {"queue": "loyalty.admin"}}


def test_domain_code_and_the_command_line_import_no_worker() -> None:
    code = ("import sys, loyalty.cli.main, loyalty.replay, loyalty.publish, loyalty.ledger, "
            "tasks.table; print(sorted(m for m in sys.modules if m.split('.')[0] == 'worker'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_importing_the_worker_builds_no_app() -> None:
    code = ("import worker.app, worker.batching, worker.execution, worker.consumer; "
            "print(worker.app._current)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "None"
