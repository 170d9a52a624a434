"""Throughput benchmark: figures and ratios measured in one run, never pass/fail.

    .venv/bin/python bench/run.py --broker redis --events 20000
    .venv/bin/python bench/run.py --broker rabbitmq --events 20000 --processes 2
    .venv/bin/python bench/run.py --broker redis --events 20000 --hot

It creates its own database (dropped afterwards), seeds accounts, and measures:
- drain: events/s applied from a pre-filled queue (first to last commit);
- latency: p50/p99 from publish to commit at a steady offered load (20% of the drain rate);
- peak RSS of each worker process;
- publish: events/s the producer helper publishes from one process;
- with --refunds PCT: a second drain of as many events, PCT% of them refunds (partial and
  full) of orders from the first, the rest new orders, then a third of orders only;
  `mixed_vs_orders` is the second's rate over the mean of the two orders-only drains
  (issue 10 wants at least 0.8);
- references from the same run: `pgbench -N` TPS (`-i -s 10`, then `-c 8 -j 2 -T 15`)
  and kombu's raw drain-and-ack rate on the same broker;
- with --ledger-sizes 0,5000000,20000000: drains at each ledger size instead, with what
  each costs (bench/sizes.py, bench/growth.py; docs/scaling.md).
Everything runs against a PostgreSQL cluster of the bench's own (bench/cluster.py), with
the settings docker-compose.yml gives the product's, unless `--server shared`.
At the end it checks the ledger (`verify`) and the expected totals, prints a table and
writes a JSON file under bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import PrivateCluster
from deployment import (
    BIN,
    EVENT_IDS,
    ROOT,
    SERVER,
    Deployment,
    admin_db,
    drain_rate,
    kombu_drain,
    orders,
    pgbench_tps,
    refunds_of,
    sh,
    wait_processed,
)
from sizes import size_series


def mixed_drain(dep: Deployment, publisher: Any, placed: list[dict], args: Any, share: float,
                tag: str) -> tuple[float, int, int]:
    """Orders mixed with `share` refunds of earlier orders, drained by freshly started
    workers as the first drain was, after a VACUUM ANALYZE (autovacuum catching up with
    the previous drain must not land in this one); returns its rate, the points earned
    and those taken back."""
    dep.stop()
    dep.workers = []
    refunds, reversed_ = refunds_of(placed, share, 4) if share else ([], 0)
    fresh, earned = orders(args.events - len(refunds), args.accounts, args.hot, len(tag), tag)
    stream = [("loyalty.events.order_completed", e) for e in fresh] + [
        ("loyalty.events.order_refunded", e) for e in refunds]
    random.Random(6).shuffle(stream)
    for name, event in stream:
        publisher.send(name, event)
    admin_db(dep, "VACUUM ANALYZE")
    before = dep.query("SELECT count(*) FROM processed_events")[0]
    dep.start_workers(args.processes, args.concurrency)
    return drain_rate(dep, before, len(stream)), earned, reversed_


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", choices=["redis", "rabbitmq"], default="redis")
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--accounts", type=int, default=10000)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--hot", action="store_true", help="every event on one account")
    parser.add_argument("--bulk", type=int, default=0, metavar="N",
                        help="publish the drain as loyalty.events.bulk messages of N events")
    parser.add_argument("--latency-seconds", type=float, default=20)
    parser.add_argument("--ledger-entries", type=int, default=0, metavar="N",
                        help="grow the ledger to N entries before the drain")
    parser.add_argument("--replay", type=int, default=0, metavar="N",
                        help="also time `loyalty dlq replay --all` of N dead letters")
    parser.add_argument("--refunds", type=float, default=0, metavar="PCT",
                        help="also drain a stream with PCT%% refunds, e.g. 20 (issue 10)")
    parser.add_argument("--ledger-sizes", default="", metavar="N,N,...",
                        help="drain at each ledger size in turn, growing between drains, e.g. "
                             "0,5000000,20000000 (issue 14); reports WAL per event and costs")
    parser.add_argument("--event-ids", choices=["uuid4", "uuid7"], default="uuid4",
                        help="random event ids, as most producers send (default), or "
                             "time-ordered ones, as the producer helper makes")
    parser.add_argument("--server", choices=["private", "shared"], default="private",
                        help="private: a PostgreSQL cluster of the bench's own, with the "
                             "settings of bench/cluster.py (default); shared: the one on 5432")
    parser.add_argument("--pg-port", type=int, default=55432,
                        help="the private cluster's port")
    parser.add_argument("--pg-defaults", action="store_true",
                        help="the private cluster with PostgreSQL's default settings, to "
                             "see what docker-compose's settings change")
    parser.add_argument("--skip-references", action="store_true")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15",
                        help="the Redis broker (emptied first): a private redis-server keeps "
                             "parallel benchmarks and appendfsync trials apart")
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                        help="a worker setting, e.g. batch_wait_ms=5 (LOYALTY_BATCH_WAIT_MS)")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from loyalty.publish import Publisher
    from loyalty.settings import Settings

    run_id = uuid.uuid4().hex[:6]
    EVENT_IDS["kind"] = args.event_ids
    cluster = None
    if args.server == "private":
        print(f"starting a private PostgreSQL on port {args.pg_port} ...", file=sys.stderr)
        cluster = PrivateCluster(args.pg_port, defaults=args.pg_defaults).start()
        SERVER["port"] = args.pg_port
    dep = Deployment(args.broker, run_id, args.redis_url)
    for setting in args.setting:
        name, sep, value = setting.partition("=")
        if not sep:
            parser.error(f"--setting {setting!r}: expected NAME=VALUE")
        dep.env[f"LOYALTY_{name.upper()}"] = value
    results: dict[str, Any] = {"broker": args.broker, "events": args.events,
                               "accounts": args.accounts, "processes": args.processes,
                               "concurrency": args.concurrency, "hot": args.hot, "bulk": args.bulk,
                               "settings": args.setting, "event_ids": args.event_ids,
                               "postgres": {"server": args.server, **(
                                   {"version": cluster.version(), **cluster.settings}
                                   if cluster else {})},
                               "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                               "at": datetime.now(UTC).isoformat()}
    try:
        if not args.skip_references:
            print("reference: pgbench -N ...", file=sys.stderr)
            results["pgbench_tps"] = round(pgbench_tps(run_id), 1)
            print("reference: kombu raw drain ...", file=sys.stderr)
            results["kombu_drain_per_s"] = round(kombu_drain(dep.broker_url, 20000), 1)
        dep.create(args.accounts)
        if args.ledger_entries:
            print(f"growing the ledger to {args.ledger_entries} entries ...", file=sys.stderr)
            results["ledger_entries_before"] = dep.grow_ledger(args.ledger_entries)
        settings = Settings.from_env(dep.env)
        if args.ledger_sizes:
            sizes = [int(x) for x in args.ledger_sizes.split(",")]
            results["sizes"], expected = size_series(dep, args, settings, sizes, cluster)
            check_ledger(results, dep, expected, None)
            return
        events, expected = orders(args.events, args.accounts, args.hot, 1, "drain")
        print(f"publishing {args.events} events ...", file=sys.stderr)
        with Publisher(settings=settings) as publisher:
            started = time.perf_counter()
            if args.bulk:
                publisher.send_bulk((("order.completed", e) for e in events), args.bulk)
            else:
                for event in events:
                    publisher.send("loyalty.events.order_completed", event)
            results["publish_per_s"] = round(args.events / (time.perf_counter() - started), 1)
        print("draining ...", file=sys.stderr)
        dep.start_workers(args.processes, args.concurrency)
        # Wall clock from the first applied event to the last, polled: processed_at is a
        # transaction's start, and a batch's events all share it.
        drain = drain_rate(dep, 0, args.events)
        results["drain_events_per_s"] = round(drain, 1)
        reversed_expected = 0
        if args.refunds:
            print(f"draining orders with {args.refunds:g}% refunds ...", file=sys.stderr)
            # Orders only again afterwards: the mixed drain is compared with both orders-only
            # drains around it, so that a ledger growing over the run favours neither.
            with Publisher(settings=settings) as publisher:
                mixed, more, reversed_expected = mixed_drain(dep, publisher, events, args,
                                                             args.refunds / 100, "mixed")
                expected += more
                print("draining orders only again ...", file=sys.stderr)
                again, more, _ = mixed_drain(dep, publisher, events, args, 0, "again")
                expected += more
            results["mixed_events_per_s"] = round(mixed, 1)
            results["orders_again_events_per_s"] = round(again, 1)
            results["mixed_vs_orders"] = round(mixed / ((drain + again) / 2), 3)
            args.events *= 3  # what the latency phase waits for

        rate = max(1.0, drain * 0.2)
        count = int(rate * args.latency_seconds)
        print(f"latency at {rate:.0f} events/s for {args.latency_seconds:.0f}s ...", file=sys.stderr)
        steady, more = orders(count, args.accounts, args.hot, 2, "steady")
        expected += more
        with Publisher(settings=settings) as publisher:
            started = time.perf_counter()
            for i, event in enumerate(steady):
                due = started + i / rate
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                event["occurred_at"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
                publisher.send("loyalty.events.order_completed", event)
        wait_processed(dep, args.events + count, timeout=600)
        results["latency_ms"] = latency(dep, steady)
        results["latency_offered_per_s"] = round(rate, 1)
        results["peak_rss_mb"] = [round(x, 1) for x in dep.peak_rss_mb()]
        dep.stop()
        if args.replay:
            print(f"replaying {args.replay} dead letters ...", file=sys.stderr)
            letters, more = orders(args.replay, args.accounts, args.hot, 3, "letter")
            expected += more
            dep.seed_letters(letters)
            started = time.perf_counter()
            out = json.loads(sh(str(BIN / "loyalty"), "dlq", "replay", "--all", "--json",
                                env=dep.env))
            results["replay_events_per_s"] = round(args.replay / (time.perf_counter() - started), 1)
            results["replay_summary"] = out["summary"]
            results["replay_vs_drain"] = round(results["replay_events_per_s"] / drain, 3)
        check_ledger(results, dep, expected, reversed_expected if args.refunds else None)
        if "pgbench_tps" in results:
            results["drain_vs_pgbench"] = round(drain / results["pgbench_tps"], 3)
            results["drain_vs_kombu"] = round(drain / results["kombu_drain_per_s"], 3)
    finally:
        dep.drop()
        if cluster:
            cluster.close()
        write_report(results, args, run_id)
    if not results.get("verify_ok") or results.get("earned_expected") != results.get("earned_actual") \
            or results.get("reversed_expected") != results.get("reversed_actual"):
        raise SystemExit("the ledger does not add up")


def check_ledger(results: dict[str, Any], dep: Deployment, expected: int,
                 reversed_expected: int | None) -> None:
    """`verify`, and the totals the drains should have added up to."""
    from loyalty import db
    from loyalty.ledger import Ledger

    print("verifying the ledger ...", file=sys.stderr)
    ledger = Ledger(db.get_engine(dep.env["LOYALTY_DATABASE_URL"]))
    report = ledger.verify()
    totals = ledger.totals()
    db.dispose_all()
    results["verify_ok"] = report["ok"]
    results["earned_expected"] = expected
    results["earned_actual"] = totals["points"]["earned"]
    if reversed_expected is not None:
        results["reversed_expected"] = reversed_expected
        results["reversed_actual"] = totals["points"]["reversed"]


def write_report(results: dict[str, Any], args: Any, run_id: str) -> None:
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    name = (f"{args.broker}-p{args.processes}c{args.concurrency}{'-hot' if args.hot else ''}"
            f"{f'-bulk{args.bulk}' if args.bulk else ''}"
            f"{f'-refunds{args.refunds:g}' if args.refunds else ''}"
            f"{'-sizes' if args.ledger_sizes else ''}"
            f"{'-uuid7' if args.event_ids == 'uuid7' else ''}"
            f"{'-pgdefaults' if args.pg_defaults else ''}-{run_id}.json")
    (out / name).write_text(json.dumps(results, indent=2, default=str))
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key.ljust(width)}  {value}")
    print(f"written: bench/results/{name}")


def latency(dep: Deployment, steady: list[dict]) -> dict[str, float]:
    """Publish-to-apply, in ms: occurred_at was stamped at publish; processed_at is when the
    batch wrote its processed_events rows, its last statement: the commit (a few ms with
    its deferred checks and fsync) comes after it and is not included."""
    with psycopg.connect(dep.dsn) as conn:
        rows = conn.execute(
            "SELECT p.event_id, extract(epoch FROM p.processed_at) FROM processed_events p"
            " WHERE p.event_id = ANY(%s)", ([e["event_id"] for e in steady],)).fetchall()
    published = {e["event_id"]: datetime.fromisoformat(e["occurred_at"].replace("Z", "+00:00"))
                 .timestamp() for e in steady}
    values = sorted((float(t) - published[event_id]) * 1000 for event_id, t in rows)
    return {"p50": round(statistics.median(values), 1),
            "p99": round(values[int(len(values) * 0.99) - 1], 1),
            "max": round(values[-1], 1), "n": len(values)}


if __name__ == "__main__":
    main()
