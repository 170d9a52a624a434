"""The periodic jobs `loyalty beat` sends, and how often: parsed from one setting. Pure.

`LOYALTY_BEAT_SCHEDULE` is `task=seconds` pairs separated by commas. Each job takes an
optional `as_of` and is idempotent (docs/contract.md), so a beat that sends twice, or
two beats started by mistake, double nothing; they only cost a run that finds no work.
"""

from __future__ import annotations

from loyalty.errors import SettingsError

#: The periodic jobs there are; a schedule may name these only.
PERIODIC = ("loyalty.program.activate_points", "loyalty.program.expire_points",
            "loyalty.program.recalculate_tiers")
DEFAULT = ("loyalty.program.activate_points=600,loyalty.program.expire_points=3600,"
           "loyalty.program.recalculate_tiers=3600")


def parse_schedule(text: str) -> dict[str, int]:
    """`task=seconds,...` as {task: seconds}; an empty text schedules nothing."""
    schedule: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, seconds = part.partition("=")
        name = name.strip()
        if not sep or name not in PERIODIC:
            raise SettingsError(f"LOYALTY_BEAT_SCHEDULE: {part!r} is not task=seconds with a"
                                f" task of {', '.join(PERIODIC)}")
        if name in schedule:
            raise SettingsError(f"LOYALTY_BEAT_SCHEDULE names {name} twice")
        try:
            every = int(seconds)
        except ValueError:
            raise SettingsError(f"LOYALTY_BEAT_SCHEDULE: {seconds.strip()!r} is not a whole"
                                " number of seconds") from None
        if not 1 <= every <= 604_800:
            raise SettingsError("LOYALTY_BEAT_SCHEDULE: every job runs every 1 to 604800"
                                " seconds")
        schedule[name] = every
    return schedule
