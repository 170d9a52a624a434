"""Soak: run each restart and kill scenario many times; count lost and doubled events per run.

    .venv/bin/python bench/soak.py --runs 30
    .venv/bin/python bench/soak.py --runs 5 --scenario redis-restart --scenario two-nodes-redis

Not part of the test suite (it takes long). Each scenario is one end-to-end test, run
`--per-session` times in one pytest session (LOYALTY_TEST_REPEAT); the rounds go through
every scenario in turn, so each gets the same number of runs however long the soak lasts.
Every run appends its figures (`lost`: events of the stream never applied; `doubled`:
contacts paid more than the applied events give) to a JSON-lines file through
`LOYALTY_TEST_OUTCOME` (tests/e2e/streams.py `record_outcome`); a run whose test failed
for another reason is counted as not passed. A table per scenario is printed after every
round, so an interrupted soak still reports.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: scenario -> (test function, the broker parameter to select with -k, if any)
SCENARIOS = {
    "redis-restart": ("tests/e2e/test_restarts.py::test_redis_restart_mid_stream", ""),
    "redis-main-kill":
        ("tests/e2e/test_restarts.py::test_redis_main_process_sigkill_mid_stream", ""),
    "rabbitmq-restart": ("tests/e2e/test_restarts.py::test_rabbitmq_restart_mid_stream", ""),
    "two-nodes-redis":
        ("tests/e2e/test_nodes.py::test_two_nodes_one_killed_mid_stream_lose_and_double_nothing",
         "redis"),
    "two-nodes-rabbitmq":
        ("tests/e2e/test_nodes.py::test_two_nodes_one_killed_mid_stream_lose_and_double_nothing",
         "rabbitmq"),
    "worker-kill-redis":
        ("tests/e2e/test_failures.py::test_sigkilled_worker_loses_and_doubles_nothing", "redis"),
    "worker-kill-rabbitmq":
        ("tests/e2e/test_failures.py::test_sigkilled_worker_loses_and_doubles_nothing",
         "rabbitmq"),
}


def run_session(scenario: tuple[str, str], repeat: int,
                outcome: Path) -> list[dict[str, object]]:
    """`repeat` runs of one scenario in one pytest session (one template database)."""
    before = outcome.read_text().count("\n") if outcome.exists() else 0
    started = time.monotonic()
    test, broker = scenario
    done = subprocess.run(
        [sys.executable, "-m", "pytest", test, *(["-k", broker] if broker else []), "-q", "-rA",
         "-p", "no:cacheprovider", "-o", "addopts="],
        cwd=ROOT, env={**os.environ, "LOYALTY_TEST_OUTCOME": str(outcome),
                       "LOYALTY_TEST_REPEAT": str(repeat)},
        capture_output=True, text=True)
    lines = outcome.read_text().splitlines()[before:] if outcome.exists() else []
    figures = {}
    for line in lines:
        record = json.loads(line)
        match = re.search(r"run(\d+)", record["test"])
        figures[int(match.group(1)) if match else 0] = record
    status = {int(m.group(2)): m.group(1) for m in re.finditer(
        r"^(PASSED|FAILED|ERROR) \S*run(\d+)", done.stdout, re.MULTILINE)}
    seconds = round((time.monotonic() - started) / max(repeat, 1), 1)
    return [{"passed": status.get(n) == "PASSED", "lost": figures.get(n, {}).get("lost"),
             "doubled": figures.get(n, {}).get("doubled"), "seconds": seconds,
             "status": status.get(n, "not run")} for n in range(repeat)]


def report(results: dict[str, list[dict[str, object]]]) -> None:
    print(f"{'scenario':22} {'runs':>4} {'passed':>6} {'lost>0':>6} {'doubled>0':>9} "
          f"{'lost':>5} {'doubled':>7}")
    for name, runs in results.items():
        lost = [r["lost"] for r in runs if isinstance(r["lost"], int)]
        doubled = [r["doubled"] for r in runs if isinstance(r["doubled"], int)]
        print(f"{name:22} {len(runs):>4} {sum(bool(r['passed']) for r in runs):>6} "
              f"{sum(1 for n in lost if n):>6} {sum(1 for n in doubled if n):>9} "
              f"{sum(lost):>5} {sum(doubled):>7}")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="runs per scenario")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS),
                        help="only these (repeatable); default: all")
    parser.add_argument("--until", type=float, default=0, metavar="EPOCH",
                        help="start no round after this time (seconds since the epoch)")
    parser.add_argument("--per-session", type=int, default=5,
                        help="runs of a scenario in one pytest session (LOYALTY_TEST_REPEAT)")
    parser.add_argument("--out", type=Path, help="JSON-lines file of every run")
    args = parser.parse_args()
    names = args.scenario or list(SCENARIOS)
    outcome = Path(tempfile.mkstemp(prefix="loyalty-soak-", suffix=".jsonl")[1])
    results: dict[str, list[dict[str, object]]] = defaultdict(list)
    rounds = -(-args.runs // args.per_session)
    for round_no in range(1, rounds + 1):
        if args.until and time.time() > args.until:
            print(f"stopping before round {round_no}: --until reached")
            break
        for name in names:
            for result in run_session(SCENARIOS[name], args.per_session, outcome):
                results[name].append(result)
                line = json.dumps({"round": round_no, "scenario": name, **result})
                print(line, flush=True)
                if args.out:
                    with args.out.open("a") as handle:
                        handle.write(line + "\n")
        report(results)


if __name__ == "__main__":
    main()
