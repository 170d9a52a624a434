"""Points in time, end to end: the program settings through the real command line."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from loyalty.publish import Publisher
from tests.e2e.conftest import Env, wait_for

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
