"""The worker's event throughput with the outbox on and off, measured in one run.

    .venv/bin/python bench/outbox.py --broker rabbitmq --events 20000

Four drains of a pre-filled queue of order events (as bench/run.py measures one): the
outbox triggers off; on (the events are written, no relay runs); on with a relay
(`loyalty relay`) publishing to `loyalty.notifications` (a queue bound to it, as a
subscriber would) on the same machine at the same time; off again. Each "on" drain is
divided by the mean of the two "off" drains, so a machine that slows down during the run
does not read as the outbox's cost. Issue 13 allows a fall of at most 15%. Figures, never
pass/fail; verify and totals at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from kombu import Connection, Exchange, Queue

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deployment import BIN, ROOT, Deployment, orders

TRIGGERS = (("ledger_entries", "ledger_entries_outbox"), ("accounts", "accounts_outbox"))


def outbox(dep: Deployment, on: bool) -> None:
    with psycopg.connect(dep.dsn, autocommit=True) as conn:
        for table, trigger in TRIGGERS:
            conn.execute(f"ALTER TABLE {table} {'ENABLE' if on else 'DISABLE'} TRIGGER {trigger}")


def drain(dep: Deployment, events: list[dict], args: argparse.Namespace, relay: bool,
          publisher_settings: Any) -> dict[str, float]:
    from loyalty.publish import Publisher

    base = dep.query("SELECT count(*) FROM processed_events")[0]
    with Publisher(settings=publisher_settings) as publisher:
        for event in events:
            publisher.send("loyalty.events.order_completed", event)
    relay_proc = None
    if relay:
        log = open(ROOT / "bench" / "results" / "relay.log", "w")  # noqa: SIM115
        relay_proc = subprocess.Popen([str(BIN / "loyalty"), "relay"], env=dep.env, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
    dep.start_workers(1, args.concurrency)
    while dep.query("SELECT count(*) FROM processed_events")[0] == base:
        time.sleep(0.02)
    first = time.perf_counter()
    while (done := dep.query("SELECT count(*) FROM processed_events")[0]) < base + len(events):
        time.sleep(0.05)
    rate = (done - base) / max(time.perf_counter() - first, 1e-6)
    result = {"drain_events_per_s": round(rate, 1)}
    dep.stop()
    dep.workers.clear()
    if relay_proc is not None:
        started = time.perf_counter()
        while dep.query("SELECT count(*) FROM outbox_events WHERE delivered_at IS NULL")[0]:
            time.sleep(0.1)
        result["relay_caught_up_after_s"] = round(time.perf_counter() - started, 2)
        fields = Path(f"/proc/{relay_proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        result["relay_cpu_s"] = round(cpu, 2)
        result["relay_cpu_ms_per_event"] = round(cpu * 1000 / len(events), 3)
        os.killpg(relay_proc.pid, signal.SIGTERM)
        relay_proc.wait(30)
        result["outbox_events"] = dep.query("SELECT count(*) FROM outbox_events")[0]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", choices=["redis", "rabbitmq"], default="rabbitmq")
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--accounts", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from loyalty import db
    from loyalty.ledger import Ledger
    from loyalty.settings import Settings

    run_id = uuid.uuid4().hex[:6]
    dep = Deployment(args.broker, run_id)
    results: dict[str, Any] = {"broker": args.broker, "events_per_drain": args.events,
                               "accounts": args.accounts, "concurrency": args.concurrency,
                               "at": datetime.now(UTC).isoformat(),
                               "machine": {"cpus": os.cpu_count()}}
    expected = 0
    try:
        (ROOT / "bench" / "results").mkdir(exist_ok=True)
        dep.create(args.accounts)
        with psycopg.connect(dep.dsn, autocommit=True) as conn:
            conn.execute("UPDATE outbox_events SET delivered_at = now()")
            conn.execute("DELETE FROM outbox_events")
        with Connection(dep.broker_url) as conn:
            Queue("bench-notifications", Exchange("loyalty.notifications", type="topic",
                                                  durable=True), routing_key="#")(
                conn.default_channel).declare()
        settings = Settings.from_env(dep.env)
        phases = (("1_off", False, False), ("2_on", True, False), ("3_on_relay", True, True),
                  ("4_off", False, False))
        for seed, (label, on, relay) in enumerate(phases):
            events, points = orders(args.events, args.accounts, False, seed + 11, label)
            expected += points
            outbox(dep, on)
            print(f"drain {label} ...", file=sys.stderr)
            results[label] = drain(dep, events, args, relay=relay, publisher_settings=settings)
            if on and not relay:  # what the next phase's relay would find: start it empty
                with psycopg.connect(dep.dsn, autocommit=True) as conn:
                    conn.execute("UPDATE outbox_events SET delivered_at = now()")
                    conn.execute("DELETE FROM outbox_events")
        off = (results["1_off"]["drain_events_per_s"] + results["4_off"]["drain_events_per_s"]) / 2
        results["on_vs_off"] = round(results["2_on"]["drain_events_per_s"] / off, 3)
        results["on_with_relay_vs_off"] = round(
            results["3_on_relay"]["drain_events_per_s"] / off, 3)
        ledger = Ledger(db.get_engine(dep.env["LOYALTY_DATABASE_URL"]))
        results["verify_ok"] = ledger.verify()["ok"]
        results["earned_ok"] = ledger.totals()["points"]["earned"] == expected
        db.dispose_all()
    finally:
        dep.drop()
    name = f"outbox-{args.broker}-{run_id}.json"
    (ROOT / "bench" / "results" / name).write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
