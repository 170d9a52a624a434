"""The Celery application, built by `create_app` on first use, never at import.

`celery -A worker worker` finds it as `worker.celery` (see worker/__init__.py) and
`loyalty worker` through `current()`; tests and domain code that import worker modules
get no app until something asks for one.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from celery import Celery, Task, signals

from loyalty import db, metrics
from loyalty.errors import LoyaltyError
from loyalty.ledger import Ledger
from loyalty.settings import Settings
from loyalty.signing import enable_signing
from schemas.events import set_max_future_skew
from tasks.table import TABLE
from worker import log_format
from worker.config import celery_config
from worker.heartbeat import Heartbeat

log = logging.getLogger("loyalty.worker")


class LoyaltyTask(Task):
    #: Failures outside the task body (crashes, unpackable bodies) are handled here.
    Request = "worker.request:LoyaltyRequest"
    #: Retries are bounded by our own policy (worker.execution), not Celery's default of 3.
    max_retries = None


def create_app(settings: Settings | None = None) -> Celery:
    settings = settings or Settings.from_env()
    app = Celery("loyalty", task_cls=LoyaltyTask)
    app.conf.update(celery_config(settings))
    app.conf.loyalty_settings = settings
    app.steps["consumer"].add(Heartbeat)
    set_max_future_skew(settings.max_future_skew)
    if settings.signing:
        enable_signing(app, key=settings.security_key,
                       certificate=settings.security_certificate,
                       cert_store=settings.security_cert_store)
        # Control messages (consumed only with LOYALTY_REMOTE_CONTROL) must be signed
        # whatever the task queues accept: the mailbox takes its own accept list.
        app.control.mailbox.accept = ["auth"]
        if settings.require_signed_admin:
            # Plain JSON is let in for shop events only; worker.consumer refuses it for
            # anything else before it is decoded. The worker still signs what it sends.
            app.conf.accept_content = ["json", "auth"]
    _register_tasks(app)
    return app


def _register_tasks(app: Celery) -> None:
    """One Celery task per entry of the task table, all with the same body."""
    from worker.execution import perform

    for task in TABLE:
        options: dict[str, Any] = (
            {"Strategy": "worker.batching.intake:strategy"} if task.batched else {})
        # shared=False: the task belongs to this app only, not to every app created later.
        app.task(perform, name=task.name, bind=True, shared=False,
                 ignore_result=not task.answers, **options)


_current: Celery | None = None


def current() -> Celery:
    """This process's app, built from the environment the first time it is asked for."""
    global _current
    if _current is None:
        _current = create_app()
    return _current


def settings() -> Settings:
    configured: Settings = current().conf.loyalty_settings
    return configured


def ledger() -> Ledger:
    """This process's ledger; the engine behind it is created after the fork, per process."""
    s = settings()
    return Ledger(db.get_engine(s.database_url, s.db_pool_size),
                  expiring_soon_days=s.expiring_soon_days)


@signals.worker_init.connect
def _refuse_unmigrated_database(**_: Any) -> None:
    s = settings()
    try:
        db.ensure_migrated(db.get_engine(s.database_url, s.db_pool_size))
    except LoyaltyError as exc:
        log.critical("worker not started: %s", exc)
        sys.stderr.write(f"error: {exc}\n")
        sys.stderr.flush()
        # Celery logs and swallows exceptions raised by signal handlers, so leave now.
        raise SystemExit(3) from None
    except Exception as exc:
        sys.stderr.write(f"error: cannot reach the database: {exc}\n")
        raise SystemExit(3) from None
    finally:
        # Never hand the check's connections down to forked children.
        db.dispose_all()


@signals.worker_process_init.connect
def _fresh_engines_after_fork(**_: Any) -> None:
    db.forget_inherited()


@signals.worker_init.connect
def _serve_metrics(**_: Any) -> None:
    """Before the pool forks: its processes record into the directory served here."""
    if metrics.prepare(settings()):
        metrics.serve(settings())


@signals.worker_process_shutdown.connect
def _metrics_of_exited_process(pid: int | None = None, **_: Any) -> None:
    metrics.process_exited(pid or os.getpid())


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _structured_logs(logger: logging.Logger, **_: Any) -> None:
    log_format.configure(logger, settings())
