"""The benchmark's deployment: a database of its own on the bench's server, a broker
vhost or database, worker processes; the order streams it publishes and how a drain is
timed; and the references measured in the same run (`pgbench -N`, kombu's raw drain)."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import psycopg
from kombu import Connection, Consumer, Queue

from loyalty.ids import uuid7

sys.path.insert(0, str(Path(__file__).resolve().parent))
from growth import grow

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
