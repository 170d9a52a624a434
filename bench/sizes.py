"""Drains at each ledger size (`bench/run.py --ledger-sizes`, issue 14): grow, drain right
after a checkpoint, drain again within the cycle, and measure each (bench/growth.py)."""

from __future__ import annotations

import sys
import time
from typing import Any

from cluster import PrivateCluster
from deployment import Deployment, admin_db, drain_rate, orders
from growth import Measured, tree_cpu_seconds

from loyalty.publish import Publisher

#: Drains within the checkpoint cycle at each size; the median is the size's figure.
WARM_DRAINS = 3


def size_series(dep: Deployment, args: Any, settings: Any, sizes: list[int],
                cluster: PrivateCluster | None) -> tuple[list[dict[str, Any]], int]:
    """Drains of `--events` orders at each ledger size, the ledger grown in between.

    The first starts right after a CHECKPOINT, when every page a batch writes goes to the
    WAL whole the first time; three more follow within the same checkpoint cycle, as a
    worker runs most of the time (with `checkpoint_timeout` at 30 minutes). Each is
    drained by freshly started workers from a pre-filled queue after an ANALYZE (unless
    the ledger is empty), so their plans are made at this size, with its costs measured
    (bench/growth.py).
    """
    expected = 0
    series: list[dict[str, Any]] = []

    def drain(tag: str, seed: int) -> dict[str, Any]:
        nonlocal expected
        dep.stop()
        dep.workers = []
        events, more = orders(args.events, args.accounts, args.hot, seed, tag)
        expected += more
        with Publisher(settings=settings) as publisher:
            for event in events:
                publisher.send("loyalty.events.order_completed", event)
        if dep.query("SELECT EXISTS (SELECT 1 FROM ledger_entries)")[0]:
            # Never on an empty ledger: statistics that say "empty" make PostgreSQL's own
            # foreign-key checks plan scans, which their connection keeps; a new
            # deployment's tables have no statistics and get index scans.
            admin_db(dep, "ANALYZE")
        (mark, have) = dep.query("SELECT COALESCE(max(seq), 0), count(*) FROM ledger_entries")
        measured = Measured(dep.dsn)
        measured.start(cluster.log_text() if cluster else "")
        print(f"draining {args.events} events at {have:,} entries ({tag}) ...", file=sys.stderr)
        dep.start_workers(args.processes, args.concurrency)
        cpu: dict[str, float] = {}

        def cpu_now() -> dict[str, float]:
            return {"worker": tree_cpu_seconds([w.pid for w in dep.workers]),
                    "postgres": tree_cpu_seconds([cluster.postmaster()]) if cluster else 0.0}

        # One EARN per order: counting entries above the mark stays cheap at any size.
        # (the highest seq says at least as much, at the cost of one index probe).
        rate = drain_rate(dep, 0, args.events,
                          f"SELECT count(*) FROM ledger_entries WHERE seq > {int(mark)}",
                          on_first=lambda: cpu.update(cpu_now()),
                          estimate=f"SELECT COALESCE(max(seq), 0) - {int(mark)}"
                                   " FROM ledger_entries")
        spent = {k: v - cpu[k] for k, v in cpu_now().items()}
        dep.stop()
        dep.workers = []
        time.sleep(1)  # the workers' backends exit and send their counters
        row = {"ledger_entries": have, "drain_events_per_s": round(rate, 1),
               # CPU per 1,000 events from the first applied event to the last: the
               # worker's processes, and every PostgreSQL process (backends, WAL writer,
               # checkpointer) of the private cluster.
               "cpu_s_per_1000_events": {k: round(v * 1000 / args.events, 3)
                                         for k, v in spent.items()}}
        row.update(measured.finish(args.events, cluster.log_text() if cluster else ""))
        print(f"  {rate:,.0f} events/s, {row['wal_bytes_per_event']} WAL bytes/event",
              file=sys.stderr)
        return row

    for i, size in enumerate(sizes):
        dep.stop()
        if size:
            print(f"growing the ledger to {size:,} entries ...", file=sys.stderr)
            dep.grow_ledger(size)  # ends with VACUUM ANALYZE and CHECKPOINT
        else:
            admin_db(dep, "CHECKPOINT")
        cold = drain(f"cold{i}", 100 + i)
        # Three within the cycle, the median reported: single drains on a shared machine
        # are noisy (docs/scaling.md).
        warm = sorted((drain(f"size{i}-{k}", 10 + 10 * k + i) for k in range(WARM_DRAINS)),
                      key=lambda r: r["drain_events_per_s"])
        row = warm[len(warm) // 2]
        row["drains_events_per_s"] = [r["drain_events_per_s"] for r in warm]
        row["after_checkpoint"] = cold
        series.append(row)
    for row in series:
        row["vs_first"] = round(row["drain_events_per_s"] / series[0]["drain_events_per_s"], 3)
        cold = row["after_checkpoint"]
        cold["vs_first"] = round(cold["drain_events_per_s"]
                                 / series[0]["after_checkpoint"]["drain_events_per_s"], 3)
    dep.stop()
    (grown,) = dep.query("SELECT COALESCE(sum(amount), 0) FROM ledger_entries"
                         " WHERE order_id LIKE 'grow-%'")
    return series, expected + int(grown)
