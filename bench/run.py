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
  and kombu's raw drain-and-ack rate on the same broker.
At the end it checks the ledger (`verify`) and the expected totals, prints a table and
writes a JSON file under bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import psycopg
from kombu import Connection, Consumer, Queue

from loyalty.ids import uuid7

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import PrivateCluster
from growth import Measured, grow, tree_cpu_seconds

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
#: The PostgreSQL server every phase uses: the private cluster unless `--server shared`.
SERVER = {"host": "127.0.0.1", "port": 5432}
#: How the drained (and grown) events' ids are made: `--event-ids`.
EVENT_IDS = {"kind": "uuid4"}


def admin_dsn(dbname: str = "postgres") -> str:
    return f"host={SERVER['host']} port={SERVER['port']} user=postgres dbname={dbname}"


def sh(*args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, env=env).stdout


def admin(sql: str) -> None:
    with psycopg.connect(admin_dsn(), autocommit=True) as conn:
        conn.execute(sql)


def pgbench_tps(run_id: str) -> float:
    name = f"loyalty_bench_{run_id}_pgbench"
    admin(f'CREATE DATABASE "{name}"')
    try:
        base = ["-h", SERVER["host"], "-p", str(SERVER["port"]), "-U", "postgres"]
        sh("pgbench", *base, "-i", "-s", "10", "-q", name)
        out = sh("pgbench", *base, "-N", "-c", "8", "-j", "2", "-T", "15", name)
        match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
        if match is None:
            match = re.search(r"tps = ([\d.]+)", out)
        assert match, out
        return float(match.group(1))
    finally:
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def kombu_drain(broker_url: str, n: int) -> float:
    """Messages/s kombu alone consumes and acks, one by one, from a pre-filled queue."""
    queue = Queue(f"bench.raw.{uuid.uuid4().hex[:6]}", durable=False, auto_delete=True)
    body = json.dumps([[{"event_id": "x" * 36, "contact_id": "c" * 12, "order_id": "o" * 12,
                         "total": "12.34", "currency": "USD", "occurred_at": "2026-01-01T00:00:00Z"}],
                       {}, {}])
    with Connection(broker_url) as conn:
        producer = conn.Producer()
        for _ in range(n):
            producer.publish(body, routing_key=queue.name, declare=[queue],
                             content_type="application/json", content_encoding="utf-8")
        done = 0
        started = time.perf_counter()

        def on_message(_body: Any, message: Any) -> None:
            nonlocal done
            message.ack()
            done += 1

        with Consumer(conn, queues=[queue], callbacks=[on_message], accept=["json"],
                      prefetch_count=100):
            while done < n:
                conn.drain_events(timeout=10)
        elapsed = time.perf_counter() - started
        queue(conn.default_channel).delete()
    return n / elapsed


class Deployment:
    def __init__(self, broker: str, run_id: str,
                 redis_url: str = "redis://127.0.0.1:6379/15") -> None:
        self.db = f"loyalty_bench_{run_id}"
        self.dsn = admin_dsn(self.db)
        self.vhost = None
        if broker == "redis":
            self.broker_url = redis_url
            sh("redis-cli", "-u", redis_url, "FLUSHDB")
        else:
            self.vhost = f"loyalty-bench-{run_id}"
            sh("rabbitmqctl", "-q", "add_vhost", self.vhost)
            sh("rabbitmqctl", "-q", "set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")
            self.broker_url = f"amqp://guest:guest@127.0.0.1:5672/{self.vhost}"
        url = f"postgresql+psycopg://postgres@{SERVER['host']}:{SERVER['port']}/{self.db}"
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("LOYALTY_")},
                    "LOYALTY_DATABASE_URL": url,
                    # One role for the bench's throwaway database: privileges cost nothing
                    # per statement, and the seeding below writes as the same role.
                    "LOYALTY_OWNER_DATABASE_URL": url,
                    "LOYALTY_BROKER_URL": self.broker_url,
                    "LOYALTY_RESULT_BACKEND": "redis://127.0.0.1:6379/14",
                    "LOYALTY_LOG_LEVEL": "WARNING"}
        self.workers: list[subprocess.Popen] = []

    def create(self, accounts: int) -> None:
        admin(f'CREATE DATABASE "{self.db}"')
        sh(str(BIN / "loyalty"), "db", "upgrade", env=self.env)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO contacts (contact_id, profile_at) SELECT 'bench-' || g, now()"
                         " FROM generate_series(1, %s) g", (accounts,))
            conn.execute("INSERT INTO accounts (contact_id) SELECT contact_id FROM contacts")

    def grow_ledger(self, entries: int) -> int:
        """Order EARNs as the worker writes them, up to `entries` (bench/growth.py)."""
        return grow(self.dsn, entries, time_ordered=EVENT_IDS["kind"] == "uuid7")

    def seed_letters(self, events: list[dict]) -> None:
        """Dead letters as the worker writes them for orders that could not apply yet."""
        with psycopg.connect(self.dsn, autocommit=True) as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO dead_letters (task_name, message_id, payload, headers, reason,"
                " error_detail) VALUES ('loyalty.events.order_completed', %s, %s,"
                " '{\"content_type\": \"application/json\"}', 'account_not_found', 'bench')",
                [(e["event_id"], json.dumps([[e], {}, {}])) for e in events])

    def start_workers(self, processes: int, concurrency: int) -> None:
        (ROOT / "bench" / "results").mkdir(exist_ok=True)
        for i in range(processes):
            log = open(ROOT / "bench" / "results" / f"worker-{i}.log", "w")  # noqa: SIM115
            self.workers.append(subprocess.Popen(
                [str(BIN / "loyalty"), "worker", "--concurrency", str(concurrency),
                 "--hostname", f"bench{i}@%h", "--without-gossip", "--without-mingle",
                 "--without-heartbeat"],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def peak_rss_mb(self) -> list[float]:
        peaks = []
        for proc in self.workers:
            pids = [proc.pid] + [int(p) for p in sh("ps", "-o", "pid=", "--ppid",
                                                      str(proc.pid)).split()]
            for pid in pids:
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                match = re.search(r"VmHWM:\s+(\d+) kB", status)
                if match:
                    peaks.append(int(match.group(1)) / 1024)
        return peaks

    def stop(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)

    def drop(self) -> None:
        self.stop()
        admin(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
        if self.vhost:
            sh("rabbitmqctl", "-q", "delete_vhost", self.vhost)

    def query(self, sql: str) -> Any:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return conn.execute(sql).fetchone()


def orders(n: int, accounts: int, hot: bool, seed: int, tag: str) -> tuple[list[dict], int]:
    rng = random.Random(seed)
    events, expected = [], 0
    for i in range(n):
        contact = "bench-1" if hot else f"bench-{rng.randint(1, accounts)}"
        total = Decimal(rng.randrange(100, 20000)) / 100
        expected += int(total.to_integral_value(ROUND_FLOOR))
        # Producers' own event ids are random (UUIDv4) unless they choose otherwise: their
        # indexes are the ones whose pages a growing ledger spreads writes over. The
        # producer helper makes time-ordered ones (`--event-ids uuid7`).
        event_id = str(uuid7() if EVENT_IDS["kind"] == "uuid7"
                       else uuid.UUID(int=rng.getrandbits(128), version=4))
        events.append({"event_id": event_id, "contact_id": contact, "order_id": f"{tag}-{i}",
                       "total": str(total), "currency": "USD",
                       "occurred_at": "2026-01-01T00:00:00Z"})
    return events, expected


def refunds_of(placed: list[dict], share: float, seed: int) -> tuple[list[dict], int]:
    """Refunds of `share` of the placed orders, a quarter to all of each total; and the
    points they take back in all (every account holds enough: no shortfall)."""
    from loyalty.refunds import points_due

    rng = random.Random(seed)
    events, reversed_ = [], 0
    for i, order in enumerate(rng.sample(placed, int(len(placed) * share))):
        total = Decimal(order["total"])
        amount = (total * rng.randint(1, 4) / 4).quantize(Decimal("0.01"), ROUND_FLOOR)
        if amount <= 0:
            amount = total
        reversed_ += points_due(int(total.to_integral_value(ROUND_FLOOR)), total, amount)
        events.append({"event_id": f"refund-{i}", "contact_id": order["contact_id"],
                       "order_id": order["order_id"], "refund_id": "r1", "amount": str(amount),
                       "currency": "USD", "occurred_at": "2026-01-01T00:00:00Z"})
    return events, reversed_


def drain_rate(dep: Deployment, before: int, n: int,
               count: str = "SELECT count(*) FROM processed_events",
               on_first: Any = None, estimate: str | None = None) -> float:
    """Events/s from the first applied event of this drain to its last, polled with
    `count`; `estimate`, a cheaper query that never says less than `count`, is polled
    until it says the drain is done. `on_first` is called at the first applied event."""
    cheap = estimate or count
    while dep.query(cheap)[0] == before:
        time.sleep(0.02)
    first = time.perf_counter()
    if on_first:
        on_first()
    while dep.query(cheap)[0] < before + n:
        time.sleep(0.05)
    while (done := dep.query(count)[0]) < before + n:
        time.sleep(0.05)
    return (done - before) / max(time.perf_counter() - first, 1e-6)


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


def admin_db(dep: Deployment, sql: str) -> None:
    with psycopg.connect(dep.dsn, autocommit=True) as conn:
        conn.execute(sql)


def wait_processed(dep: Deployment, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while dep.query("SELECT count(*) FROM processed_events")[0] < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {dep.query('SELECT count(*) FROM processed_events')[0]}"
                             f" of {n} events applied")
        time.sleep(0.5)


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
        cluster = PrivateCluster(args.pg_port).start()
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
            f"{'-uuid7' if args.event_ids == 'uuid7' else ''}-{run_id}.json")
    (out / name).write_text(json.dumps(results, indent=2, default=str))
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key.ljust(width)}  {value}")
    print(f"written: bench/results/{name}")


def size_series(dep: Deployment, args: Any, settings: Any, sizes: list[int],
                cluster: PrivateCluster | None) -> tuple[list[dict[str, Any]], int]:
    """Two drains of `--events` orders at each ledger size, the ledger grown in between.

    The first starts right after a CHECKPOINT, when every page a batch writes goes to the
    WAL whole the first time; the second follows it within the same checkpoint cycle, as
    a worker runs most of the time (with `checkpoint_timeout` at 30 minutes). Each is
    drained by freshly started workers from a pre-filled queue after an ANALYZE, so their
    plans are made at this size, with its costs measured (bench/growth.py).
    """
    expected = 0
    series: list[dict[str, Any]] = []

    def drain(tag: str, seed: int) -> dict[str, Any]:
        nonlocal expected
        dep.stop()
        dep.workers = []
        events, more = orders(args.events, args.accounts, args.hot, seed, tag)
        expected += more
        from loyalty.publish import Publisher

        with Publisher(settings=settings) as publisher:
            for event in events:
                publisher.send("loyalty.events.order_completed", event)
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
            dep.grow_ledger(size)
        admin_db(dep, "VACUUM ANALYZE")
        admin_db(dep, "CHECKPOINT")
        cold = drain(f"cold{i}", 100 + i)
        row = drain(f"size{i}", 10 + i)
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
