"""Program settings: how long points wait, when they expire, how tiers are kept. Pure.

One record per program (migration 0011 keeps it in `program`, with the same bounds as
CHECKs); this module validates a change before it reaches the database, so the staff
get a sentence instead of a constraint name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from loyalty.errors import InvalidProgram

EXPIRATION_MODES = ("off", "inactivity", "lots")
TIER_STATUSES = ("ACTIVE", "PAUSED", "DISABLED")
MAX_PENDING_DAYS = 90
#: `inactivity` expires after 1 to 12 months without activity; `lots` 1 to 60 months
#: after a credit became available.
MONTHS = {"inactivity": 12, "lots": 60}
MAX_WINDOW_MONTHS = 36


@dataclass(frozen=True)
class ProgramSettings:
    pending_days: int = 0
    expiration_mode: str = "off"
    expiration_months: int | None = None
    expiration_percentage: int | None = None
    tiers_status: str = "DISABLED"
    rolling_window_months: int = 12
    revision: int = 1

    def as_json(self) -> dict[str, Any]:
        """The shape of `loyalty program show --json`."""
        return {
            "pending_days": self.pending_days,
            "expiration": {"mode": self.expiration_mode, "months": self.expiration_months,
                           "percentage": self.expiration_percentage},
            "tiers": {"status": self.tiers_status,
                      "rolling_window_months": self.rolling_window_months},
            "revision": self.revision,
        }

    def changed(self, **given: Any) -> ProgramSettings:
        """These settings with the given ones (those not None) in place, validated."""
        merged = replace(self, **{k: v for k, v in given.items() if v is not None})
        validate_program(merged)
        return merged

    def columns(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "revision"}


def validate_program(s: ProgramSettings) -> None:
    """Refuse settings the database would refuse, saying which bound they cross."""
    if not 0 <= s.pending_days <= MAX_PENDING_DAYS:
        raise InvalidProgram(f"pending_days must be 0 to {MAX_PENDING_DAYS}")
    if s.expiration_mode not in EXPIRATION_MODES:
        raise InvalidProgram(f"expiration mode must be one of {', '.join(EXPIRATION_MODES)}")
    if s.expiration_percentage is not None and not 1 <= s.expiration_percentage <= 100:
        raise InvalidProgram("expiration percentage must be 1 to 100")
    if s.expiration_months is not None and not 1 <= s.expiration_months <= MONTHS["lots"]:
        raise InvalidProgram(f"expiration months must be 1 to {MONTHS['lots']}")
    if s.expiration_mode in MONTHS:
        top = MONTHS[s.expiration_mode]
        if s.expiration_months is None or not 1 <= s.expiration_months <= top:
            raise InvalidProgram(f"{s.expiration_mode} expiration needs months from 1 to {top}")
    if s.expiration_mode == "inactivity" and s.expiration_percentage is None:
        raise InvalidProgram("inactivity expiration needs a percentage from 1 to 100")
    if s.tiers_status not in TIER_STATUSES:
        raise InvalidProgram(f"tiers status must be one of {', '.join(TIER_STATUSES)}")
    if not 1 <= s.rolling_window_months <= MAX_WINDOW_MONTHS:
        raise InvalidProgram(f"rolling_window_months must be 1 to {MAX_WINDOW_MONTHS}")
