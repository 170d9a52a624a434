"""`LOYALTY_BEAT_SCHEDULE`: what `loyalty beat` sends, refused clearly when mistyped."""

from __future__ import annotations

import pytest

from loyalty.errors import SettingsError
from loyalty.schedule import DEFAULT, parse_schedule
from loyalty.settings import Settings


def test_default_and_given() -> None:
    assert parse_schedule(DEFAULT) == {"loyalty.program.activate_points": 600,
                                       "loyalty.program.expire_points": 3600,
                                       "loyalty.program.recalculate_tiers": 3600}
    assert parse_schedule(" loyalty.program.expire_points = 60 ,") == {
        "loyalty.program.expire_points": 60}
    assert parse_schedule("") == {}


@pytest.mark.parametrize(("text", "says"), [
    ("loyalty.program.expire_point=60", "is not task=seconds"),
    ("loyalty.program.expire_points", "is not task=seconds"),
    ("loyalty.program.expire_points=soon", "is not a whole number"),
    ("loyalty.program.expire_points=0", "every 1 to 604800 seconds"),
    ("loyalty.program.expire_points=5,loyalty.program.expire_points=6", "twice"),
])
def test_refused(text: str, says: str) -> None:
    with pytest.raises(SettingsError, match=says):
        parse_schedule(text)
    with pytest.raises(SettingsError, match="LOYALTY_BEAT_SCHEDULE"):
        Settings.from_env({"LOYALTY_BEAT_SCHEDULE": text})
