"""The periodic program jobs on many accounts: expire (both modes), recalculate tiers, activate.

    .venv/bin/python bench/program_jobs.py --accounts 100000

Seeds `--accounts` accounts with one 100-point ADJUST and its lot each (set-based, the
triggers off, every total set to match), then times the job as the worker runs it
(`Ledger.expire_points`, chunks of `expiring.CHUNK` accounts): `inactivity` (25% of every
balance, one EXPIRE per account), the same moment again (nothing to do), then `lots`
(every lot, one EXPIRE each); then `recalculate_tiers` (every account into a tier), and
`activate_points` after one pending order lot per account is seeded (one EARN each).
Ends with `verify`. Figures, never pass/fail.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deployment import ROOT, Deployment


def seed(dep: Deployment) -> None:
    with psycopg.connect(dep.dsn, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            "INSERT INTO ledger_entries (account_id, type, amount, balance_after, description,"
            " idempotency_key, actor, balance_before, account_revision)"
            " SELECT id, 'ADJUST', 100, 100, 'seed', 'seed:' || id, 'bench', 0, 2"
            " FROM accounts ORDER BY id")
        conn.execute("UPDATE accounts SET balance = 100, adjusted = 100, revision = 2,"
                     " last_activity_at = now() - interval '1 year'")
        conn.execute("INSERT INTO ledger_totals (account_id, adjusted)"
                     " SELECT id, 100 FROM accounts ON CONFLICT (account_id)"
                     " DO UPDATE SET adjusted = 100")
        conn.execute("INSERT INTO point_lots (account_id, entry_id, amount, remaining,"
                     " available_at) SELECT account_id, id, 100, 100, now() - interval '1 year'"
                     " FROM ledger_entries")
        conn.execute("SET session_replication_role = origin")
        conn.execute("VACUUM ANALYZE")


def seed_pending(dep: Deployment) -> None:
    """One pending 10-point order lot per account, with the event record earning writes."""
    with psycopg.connect(dep.dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO processed_events (event_id, event_type, fingerprint, contact_id,"
            " account_id, order_id, outcome, points, payload, processed_at)"
            " SELECT 'bench-ev-' || a.id, 'order.completed', 'bench', a.contact_id, a.id,"
            " 'bench-' || a.id, 'pending', 10,"
            " '{\"total\": \"10.00\", \"currency\": \"USD\"}', now() FROM accounts a")
        conn.execute(
            "INSERT INTO point_lots (account_id, amount, remaining, status, available_at,"
            " order_id, event_id, rule_id, rule_revision, order_total, currency)"
            " SELECT a.id, 10, 10, 'pending', now() - interval '1 day', 'bench-' || a.id,"
            " 'bench-ev-' || a.id, r.id, r.revision, 10, 'USD' FROM accounts a"
            " CROSS JOIN (SELECT id, revision FROM earn_rules WHERE trigger = 'order.completed'"
            " AND status = 'ACTIVE' ORDER BY id LIMIT 1) r ORDER BY a.id")
        conn.execute("VACUUM ANALYZE")


def timed(name: str, results: dict[str, object], accounts: int, job: Any) -> None:
    started = time.perf_counter()
    report = job()
    elapsed = time.perf_counter() - started
    results[name] = {**report, "seconds": round(elapsed, 2),
                     "accounts_per_s": round(accounts / elapsed)}
    print(name, json.dumps(results[name]), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=100_000)
    args = parser.parse_args()
    dep = Deployment("redis", uuid.uuid4().hex[:8])
    try:
        dep.create(args.accounts)
        seed(dep)
        from loyalty import db
        from loyalty.ledger import Ledger

        ledger = Ledger(db.get_engine(dep.env["LOYALTY_DATABASE_URL"]))
        as_of = datetime.now(UTC) + timedelta(days=1)
        results: dict[str, object] = {"accounts": args.accounts}
        for name, settings in (
                ("inactivity", {"expiration_mode": "inactivity", "expiration_months": 6,
                                "expiration_percentage": 25}),
                ("inactivity_again", {}),
                ("lots", {"expiration_mode": "lots", "expiration_months": 6})):
            if settings:
                ledger.set_program(**settings)
            started = time.perf_counter()
            report = ledger.expire_points(as_of)
            elapsed = time.perf_counter() - started
            results[name] = {**report, "seconds": round(elapsed, 2),
                             "accounts_per_s": round(args.accounts / elapsed)}
            print(name, json.dumps(results[name]), flush=True)
        ledger.set_program(tiers_status="ACTIVE")
        ledger.create_tier(name="Silver", required_points=50)
        timed("recalculate_tiers", results, args.accounts,
              lambda: ledger.recalculate_tiers(as_of))
        timed("recalculate_tiers_again", results, args.accounts,
              lambda: ledger.recalculate_tiers(as_of))
        seed_pending(dep)
        timed("activate_points", results, args.accounts, lambda: ledger.activate_points(as_of))
        started = time.perf_counter()
        verified = ledger.verify()
        results["verify_ok"] = verified["ok"]
        results["verify_violations"] = verified["violations"][:5]
        results["verify_seconds"] = round(time.perf_counter() - started, 2)
        print("verify", results["verify_ok"], results["verify_seconds"])
        out = ROOT / "bench" / "results" / f"program_jobs-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(results, indent=2, default=str))
    finally:
        from loyalty import db

        db.dispose_all()
        dep.drop()


if __name__ == "__main__":
    main()
