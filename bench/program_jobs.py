"""The periodic program jobs on many accounts: `loyalty.program.expire_points` in both modes.

    .venv/bin/python bench/program_jobs.py --accounts 100000

Seeds `--accounts` accounts with one 100-point ADJUST and its lot each (set-based, the
triggers off, every total set to match), then times the job as the worker runs it
(`Ledger.expire_points`, chunks of `expiring.CHUNK` accounts): `inactivity` (25% of every
balance, one EXPIRE per account), the same moment again (nothing to do), then `lots`
(every lot, one EXPIRE each). Ends with `verify`. Figures, never pass/fail.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import ROOT, Deployment


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
        started = time.perf_counter()
        results["verify_ok"] = ledger.verify()["ok"]
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
