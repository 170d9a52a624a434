"""Prometheus metrics, in prometheus_client's multiprocess mode for the prefork pool.

Pool processes count what they apply into files under one directory
(`PROMETHEUS_MULTIPROC_DIR`); the worker's main process serves `/metrics` on
`LOYALTY_METRICS_PORT` and adds up every process's files at each scrape, together with
gauges read from the database at that moment (dead letters, outbox backlog, webhook
deliveries), which no single process could count. With the port unset nothing is
recorded and nothing is served. The metric objects are made on first use, after
`prepare` chose the value class, so no import order can leave them single-process.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from loyalty.settings import Settings

log = logging.getLogger("loyalty.metrics")

#: Set by `prepare` in the serving process and inherited by the processes it forks:
#: they record only then.
ENV = "PROMETHEUS_MULTIPROC_DIR"
_metrics: SimpleNamespace | None = None

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


def prepare(settings: Settings) -> bool:
    """In the process that will fork the pool, before it forks: choose the directory
    (emptied: counters restart with the process) and multiprocess values. False if off."""
    if not settings.metrics_port:
        return False
    directory = settings.metrics_dir or tempfile.mkdtemp(prefix="loyalty-metrics-")
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if name.endswith(".db"):
            os.unlink(path)
        elif os.path.isdir(path):
            shutil.rmtree(path)
    os.environ[ENV] = directory
    from prometheus_client import values

    values.ValueClass = values.get_value_class()
    return True


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def _build() -> SimpleNamespace:
    from prometheus_client import Counter, Histogram

    return SimpleNamespace(
        events=Counter("loyalty_events_applied", "Events handled by the worker, by type and outcome",
                       ["type", "outcome"]),
        batch_size=Histogram("loyalty_batch_size", "Events per applied batch",
                             buckets=SIZE_BUCKETS),
        apply_seconds=Histogram("loyalty_apply_seconds", "Time to apply one batch (one transaction)",
                                buckets=LATENCY_BUCKETS),
        lag=Histogram("loyalty_publish_to_apply_lag_seconds",
                      "From an event's occurred_at to its commit", buckets=LAG_BUCKETS),
        retries=Counter("loyalty_retries", "Messages published again for later, by reason",
                        ["reason"]),
        published=Counter("loyalty_outbox_published", "Outgoing events published to the broker",
                          ["type"]),
        webhooks=Counter("loyalty_webhook_deliveries", "Webhook delivery attempts by outcome",
                         ["outcome"]),
    )


def _m() -> SimpleNamespace | None:
    global _metrics
    if not enabled():
        return None
    if _metrics is None:
        _metrics = _build()
    return _metrics


def observe_batch(types_and_outcomes: Iterable[tuple[str, str, datetime | None]],
                  seconds: float, size: int) -> None:
    """One applied batch: each event's (type, outcome, occurred_at), its time and size."""
    m = _m()
    if m is None:
        return
    now = datetime.now(UTC)
    m.batch_size.observe(size)
    m.apply_seconds.observe(seconds)
    for kind, outcome, occurred_at in types_and_outcomes:
        m.events.labels(kind, outcome).inc()
        if occurred_at is not None:
            m.lag.observe(max(0.0, (now - occurred_at).total_seconds()))


def retried(reason: str) -> None:
    m = _m()
    if m is not None:
        m.retries.labels(reason).inc()


def published(types: Sequence[str]) -> None:
    m = _m()
    if m is not None:
        for kind in types:
            m.published.labels(kind).inc()


def webhook_attempt(outcome: str) -> None:
    m = _m()
    if m is not None:
        m.webhooks.labels(outcome).inc()


class DatabaseCollector:
    """Gauges read from the database at each scrape: they are facts about the data, not
    about one process. A database that does not answer yields no samples (and a log line)
    rather than a failed scrape."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from loyalty import db
        from loyalty.ledger import Ledger

        try:
            state = Ledger(db.get_engine(self.database_url, 1)).operations_state()
        except Exception as exc:  # a scrape must not fail with the database
            log.warning("metrics: cannot read the database: %s", exc)
            return
        letters = GaugeMetricFamily("loyalty_dead_letters", "Dead letters by reason and status",
                                    labels=["reason", "status"])
        for (reason, status), n in sorted(state["dead_letters"].items()):
            letters.add_metric([reason, status], n)
        yield letters
        yield GaugeMetricFamily("loyalty_outbox_backlog", "Outgoing events not yet delivered",
                                value=state["outbox"]["undelivered"])
        yield GaugeMetricFamily("loyalty_outbox_oldest_age_seconds",
                                "Age of the oldest undelivered outgoing event",
                                value=state["outbox"]["oldest_age_seconds"])
        hooks = GaugeMetricFamily("loyalty_webhook_deliveries_by_status",
                                  "Webhook deliveries kept, by status", labels=["status"])
        for status, n in sorted(state["webhooks"].items()):
            hooks.add_metric([status], n)
        yield hooks


def serve(settings: Settings) -> None:
    """Serve `/metrics` from this process (a daemon thread), summing every process's files."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(DatabaseCollector(settings.database_url))
    start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=registry)
    log.info("metrics served", extra={"port": settings.metrics_port})


def process_exited(pid: int) -> None:
    if enabled():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
