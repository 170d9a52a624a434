"""Program settings bounds, table-driven: every refusal says which bound it crossed."""

from __future__ import annotations

from typing import Any

import pytest

from loyalty.errors import InvalidProgram
from loyalty.program import ProgramSettings

BASE = ProgramSettings()


@pytest.mark.parametrize("given", [
    {"pending_days": 0}, {"pending_days": 90},
    {"expiration_mode": "inactivity", "expiration_months": 12, "expiration_percentage": 1},
    {"expiration_mode": "inactivity", "expiration_months": 1, "expiration_percentage": 100},
    {"expiration_mode": "lots", "expiration_months": 60},
    {"expiration_mode": "lots", "expiration_months": 1},
    {"tiers_status": "ACTIVE", "rolling_window_months": 36},
    {"tiers_status": "PAUSED", "rolling_window_months": 1},
])
def test_within_bounds(given: dict[str, Any]) -> None:
    changed = BASE.changed(**given)
    assert all(getattr(changed, k) == v for k, v in given.items())


@pytest.mark.parametrize(("given", "says"), [
    ({"pending_days": 91}, "pending_days must be 0 to 90"),
    ({"pending_days": -1}, "pending_days must be 0 to 90"),
    ({"expiration_mode": "never"}, "expiration mode must be one of"),
    ({"expiration_mode": "inactivity", "expiration_months": 13, "expiration_percentage": 5},
     "inactivity expiration needs months from 1 to 12"),
    ({"expiration_mode": "inactivity", "expiration_months": 3},
     "inactivity expiration needs a percentage"),
    ({"expiration_mode": "lots"}, "lots expiration needs months from 1 to 60"),
    ({"expiration_mode": "lots", "expiration_months": 61}, "expiration months must be 1 to 60"),
    ({"expiration_percentage": 101}, "expiration percentage must be 1 to 100"),
    ({"tiers_status": "ON"}, "tiers status must be one of"),
    ({"rolling_window_months": 37}, "rolling_window_months must be 1 to 36"),
    ({"rolling_window_months": 0}, "rolling_window_months must be 1 to 36"),
])
def test_out_of_bounds(given: dict[str, Any], says: str) -> None:
    with pytest.raises(InvalidProgram, match=says):
        BASE.changed(**given)


def test_show_shape() -> None:
    assert BASE.as_json() == {
        "pending_days": 0,
        "expiration": {"mode": "off", "months": None, "percentage": None},
        "tiers": {"status": "DISABLED", "rolling_window_months": 12},
        "revision": 1,
    }
