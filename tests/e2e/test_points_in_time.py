"""Points in time, end to end: the program settings through the real command line."""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.e2e.conftest import Env


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
