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
    events = {"loyalty.events.signup", "loyalty.events.order_completed",
              "loyalty.events.activity", "loyalty.events.order_refunded"}
    assert events | {"loyalty.events.bulk"} == BATCHED
    assert events | {"loyalty.accounts.adjust_points"} == REPLAYABLE
    assert QUEUES == (EVENTS_QUEUE, ADMIN_QUEUE)
    assert routes() == {"loyalty.events.*": {"queue": "loyalty.events"},
                        "loyalty.accounts.*": {"queue": "loyalty.admin"},
                        "loyalty.deadletters.*": {"queue": "loyalty.admin"},
                        "loyalty.program.*": {"queue": "loyalty.admin"}}


def test_domain_code_imports_no_worker_and_the_worker_builds_no_app_at_import() -> None:
    code = ("import sys, loyalty.cli.main, loyalty.replay, loyalty.publish, loyalty.ledger, "
            "tasks.table; print(sorted(m for m in sys.modules if m.split('.')[0] == 'worker')); "
            "import worker.app, worker.batching.intake, worker.execution, worker.consumer; "
            "print(worker.app._current)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["[]", "None"]


def test_every_module_can_be_imported_first() -> None:
    """The table, its handlers, the ledger and loyalty.replay refer to each other: any of
    them imported first must not meet a partially initialised one."""
    code = """
import importlib, sys
OURS = ("loyalty", "tasks", "schemas", "worker")
for name in ("loyalty.replay", "tasks.table", "tasks.events", "tasks.accounts",
             "tasks.deadletters", "loyalty.ledger", "loyalty.ledger.earning",
             "loyalty.ledger.dead_letters", "loyalty.policy", "loyalty.publish",
             "loyalty.cli.main", "worker.app", "worker.execution", "worker.consumer",
             "worker.batching.intake", "worker.batching.job", "loyalty.ledger.earn_writes",
             "loyalty.tables.ledger", "schemas.requests", "schemas.fields",
             "worker.redis_reliable.channel"):
    for loaded in [m for m in sys.modules if m.split(".")[0] in OURS]:
        del sys.modules[loaded]
    importlib.import_module(name)
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]
