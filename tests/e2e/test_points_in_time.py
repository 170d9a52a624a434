"""Points in time, end to end: the program settings through the real command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from loyalty.publish import Publisher
from tests.conftest import connect, owner_url
from tests.e2e.conftest import LOYALTY, Env, wait_for

pytestmark = pytest.mark.e2e
TS = "2026-01-05T10:00:00Z"


def test_program_show_and_set(deploy: Callable[..., Env]) -> None:
    env = deploy()
    assert env.cli_json("program", "show") == {
        "pending_days": 0, "expiration": {"mode": "off", "months": None, "percentage": None},
        "tiers": {"status": "DISABLED", "rolling_window_months": 12}, "revision": 1}
    shown = env.cli_json("program", "set", "--pending-days", "7", "--expiration-mode",
                         "inactivity", "--expiration-months", "6", "--expiration-percentage",
                         "50", "--tiers-status", "ACTIVE", "--rolling-window-months", "3",
                         "--revision", "1")
    assert shown == {
        "pending_days": 7, "expiration": {"mode": "inactivity", "months": 6, "percentage": 50},
        "tiers": {"status": "ACTIVE", "rolling_window_months": 3}, "revision": 2}
    stale = env.cli("program", "set", "--pending-days", "1", "--revision", "1", check=False)
    assert stale.returncode == 1 and "at revision 2, not 1" in stale.stderr
    bad = env.cli("program", "set", "--pending-days", "91", check=False)
    assert bad.returncode == 2 and "pending_days must be 0 to 90" in bad.stderr
    none = env.cli("program", "set", check=False)
    assert none.returncode == 2
    assert json.loads(env.cli("program", "show", "--json").stdout) == shown
    assert "pending_days: 7" in env.cli("program", "show").stdout
    # The commands that were there before the group still answer.
    assert isinstance(env.cli_json("totals"), dict)
    assert env.cli_json("verify")["ok"] is True


def _account(env: Env, contact: str) -> dict[str, Any]:
    return env.cli_json("accounts", "get", "--contact-id", contact)


def _signed_up(env: Env, publisher: Publisher, *contacts: str) -> None:
    for c in contacts:
        publisher.signup(contact_id=c, occurred_at=TS)
    wait_for(lambda: all(env.cli("accounts", "get", "--contact-id", c, check=False)
                         .returncode == 0 for c in contacts), 60, "accounts")


def _later(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


def test_both_expiration_modes_through_the_broker(deploy: Callable[..., Env]) -> None:
    env = deploy()
    env.worker(concurrency=2)
    env.cli("program", "set", "--expiration-mode", "lots", "--expiration-months", "6")
    with Publisher(env.broker_url, env.result_backend) as publisher:
        _signed_up(env, publisher, "lots-1", "lots-2")
        expire = "loyalty.program.expire_points"
        early = publisher.send(expire, {"as_of": _later(100)}).get(timeout=60)
        assert early["entries"] == 0
        due = publisher.send(expire, {"as_of": _later(200)}).get(timeout=60)
        assert (due["mode"], due["accounts"], due["entries"], due["points"]) == \
            ("lots", 2, 2, 200)
        twice = publisher.send(expire, {"as_of": _later(200)}).get(timeout=60)
        assert twice["entries"] == 0
        assert _account(env, "lots-1")["points"]["expired"] == 100

        env.cli("program", "set", "--expiration-mode", "inactivity", "--expiration-months",
                "3", "--expiration-percentage", "50")
        _signed_up(env, publisher, "quiet-1")
        shown = _account(env, "quiet-1")["points_expiration"]
        assert shown["expiring_points"] == 50
        # Two runs at once for the same moment: one EXPIRE between them.
        both = [publisher.send(expire, {}) for _ in range(1)] + \
            [publisher.send(expire, {"as_of": _later(100)}) for _ in range(2)]
        results = [r.get(timeout=60) for r in both]
        assert sum(r["entries"] for r in results) == 1
        quiet = _account(env, "quiet-1")
        assert (quiet["points"]["balance"], quiet["points"]["expired"]) == (50, 50)
    assert env.cli_json("verify")["ok"] is True


def test_pending_points_through_the_broker(deploy: Callable[..., Env]) -> None:
    env = deploy()
    env.worker(concurrency=2)
    env.cli("program", "set", "--pending-days", "14")
    yesterday = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    with Publisher(env.broker_url, env.result_backend) as publisher:
        _signed_up(env, publisher, "p-1")
        publisher.order_completed(contact_id="p-1", order_id="A", total="50.00",
                                  currency="USD", occurred_at=yesterday)
        wait_for(lambda: _account(env, "p-1")["points"]["pending"] == 50, 60, "pending")
        listed = env.cli_json("pending", "list", "--contact-id", "p-1")["items"]
        assert [(p["order_id"], p["points"]) for p in listed] == [("A", 50)]
        # Pending points cannot be redeemed.
        spent = publisher.redeem_points(contact_id="p-1", amount=101, actor="ops").get(timeout=60)
        assert (spent["status"], spent["reason"]) == ("rejected", "insufficient_balance")
        # A refund within the window cancels pending points; nothing leaves the balance.
        publisher.order_refunded(contact_id="p-1", order_id="A", refund_id="r-1",
                                 amount="20.00", currency="USD", occurred_at=yesterday)
        wait_for(lambda: _account(env, "p-1")["points"]["pending"] == 30, 60, "cancelled")
        activate = "loyalty.program.activate_points"
        early = publisher.send(activate, {"as_of": _later(5)}).get(timeout=60)
        assert early["entries"] == 0
        due = publisher.send(activate, {"as_of": _later(14)}).get(timeout=60)
        assert (due["entries"], due["points"]) == (1, 30)
        assert publisher.send(activate, {"as_of": _later(14)}).get(timeout=60)["entries"] == 0
    points = _account(env, "p-1")["points"]
    assert (points["balance"], points["earned"], points["pending"], points["reversed"]) == \
        (130, 130, 0, 0)
    assert env.cli_json("pending", "list", "--contact-id", "p-1")["items"] == []
    assert env.cli_json("verify")["ok"] is True


def test_two_beats_expire_once(deploy: Callable[..., Env], tmp_path: Path) -> None:
    """`loyalty beat` sends the jobs on its schedule; two beats by mistake double nothing."""
    env = deploy(beat_schedule="loyalty.program.expire_points=1,"
                               "loyalty.program.activate_points=1")
    env.worker(concurrency=2)
    env.cli("program", "set", "--expiration-mode", "lots", "--expiration-months", "1")
    with Publisher(env.broker_url, env.result_backend) as publisher:
        _signed_up(env, publisher, "b-1")
    with connect(owner_url(env.db_url)) as owner:  # the lot became available long ago
        owner.execute("UPDATE point_lots SET available_at = now() - interval '2 months'")
        owner.commit()
    beats, logs = [], []
    for n in range(2):
        logs.append(log := open(tmp_path / f"beat-{n}.log", "w"))  # noqa: SIM115
        beats.append(subprocess.Popen(
            [LOYALTY, "beat"], env={**env.vars, "LOYALTY_BEAT_SCHEDULE_FILE":
                                    str(tmp_path / f"beat-{n}")},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    def sent(n: int) -> int:
        return (tmp_path / f"beat-{n}.log").read_text().count(
            "Sending due task loyalty.program.expire_points")

    try:
        wait_for(lambda: _account(env, "b-1")["points"]["expired"] == 100, 60, "the beat's run")
        after = [sent(n) for n in range(2)]
        wait_for(lambda: all(sent(n) >= after[n] + 2 for n in range(2)), 30,
                 "several more runs of both beats")
    finally:
        for proc in beats:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        for log in logs:
            log.close()
    assert _account(env, "b-1")["points"]["expired"] == 100
    expired = env.cli_json("transactions", "list", "--contact-id", "b-1", "--type", "EXPIRE")
    assert len(expired["items"]) == 1
    assert "Sending due task loyalty.program.expire_points" in \
        (tmp_path / "beat-0.log").read_text()
    assert env.cli_json("verify")["ok"] is True


def test_tiers_through_the_broker(deploy: Callable[..., Env]) -> None:
    env = deploy()
    env.worker(concurrency=2)
    env.cli("program", "set", "--tiers-status", "ACTIVE", "--rolling-window-months", "2")
    silver = env.cli_json("tiers", "create", "--name", "Silver", "--required-points", "150",
                          "--description", "regulars")
    assert (silver["name"], silver["required_points"], silver["revision"]) == \
        ("Silver", 150, 1)
    bad = env.cli("tiers", "create", "--name", "x" * 51, "--required-points", "5",
                  check=False)
    assert bad.returncode == 2 and "name must be 1 to 50" in bad.stderr
    with Publisher(env.broker_url, env.result_backend) as publisher:
        _signed_up(env, publisher, "t-1")
        assert _account(env, "t-1")["tier"] is None  # 100 points: the base level
        publisher.order_completed(contact_id="t-1", order_id="A", total="60.00",
                                  currency="USD", occurred_at=TS)
        wait_for(lambda: _account(env, "t-1")["tier"] is not None, 60, "Silver")
        shown = _account(env, "t-1")["tier"]
        assert (shown["id"], shown["name"], shown["points"]) == (silver["id"], "Silver", 160)
        # The tier at the moment of the redemption prices a reward with per-tier costs.
        mug = env.cli_json("rewards", "create", "--name", "Mug", "--kind", "custom",
                           "--cost-in-points", "50", "--tier-cost", f"{silver['id']}=30")
        assert mug["tier_costs"] == {str(silver["id"]): 30}
        bought = publisher.redeem_points(contact_id="t-1", reward_id=mug["id"],
                                         actor="ops").get(timeout=60)
        assert (bought["status"], bought["redemption"]["points"]) == ("applied", 30)
        # A per-tier rule earns the tier's rate: 3 points per USD at Silver.
        rule = next(r for r in env.cli_json("rules", "list")["items"]
                    if r["trigger"] == "order.completed")
        env.cli("rules", "update", str(rule["id"]), "--tier-points", f"{silver['id']}=3")
        publisher.order_completed(contact_id="t-1", order_id="B", total="10.00",
                                  currency="USD", occurred_at=TS)
        wait_for(lambda: _account(env, "t-1")["points"]["earned"] == 190, 60, "30 at Silver")
        recalc = "loyalty.program.recalculate_tiers"
        same = publisher.send(recalc, {"as_of": _later(1)}).get(timeout=60)
        assert (same["accounts"], same["changed"]) == (1, 0)
        assert _account(env, "t-1")["tier"]["points"] == 190
        slid = publisher.send(recalc, {"as_of": _later(70)}).get(timeout=60)
        assert slid["changed"] == 1
    assert _account(env, "t-1")["tier"] is None
    assert [t["name"] for t in env.cli_json("tiers", "list")["items"]] == ["Silver"]
    assert env.cli_json("verify")["ok"] is True
