"""What every command shares: settings read once, the ledger, the broker, usage checks."""

from __future__ import annotations

from typing import Any

import click

from loyalty import db
from loyalty.errors import LoyaltyError, TransientError
from loyalty.ledger import Ledger
from loyalty.settings import Settings

#: A row id or revision: a bigint, so a larger number is bad input, not a database error.
ROW_ID = click.IntRange(1, 2**63 - 1)


class Context:
    def __init__(self) -> None:
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.from_env()
        return self._settings

    def ledger(self) -> Ledger:
        engine = db.get_engine(self.settings.database_url, self.settings.db_pool_size)
        db.ensure_migrated(engine)
        return Ledger(engine, expiring_soon_days=self.settings.expiring_soon_days)

    def publisher(self) -> Any:
        """A producer's connection to the broker: the worker is never imported to publish."""
        from loyalty.publish import Publisher

        return Publisher(settings=self.settings)


pass_ctx = click.make_pass_decorator(Context, ensure=True)


def one_of(**options: Any) -> None:
    given = [name for name, value in options.items() if value is not None]
    if len(given) != 1:
        names = " | ".join("--" + n.replace("_", "-") for n in options)
        raise click.UsageError(f"give exactly one of {names}")


def database_error(exc: Exception) -> LoyaltyError:
    if isinstance(exc, LoyaltyError):
        return exc
    message = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    return TransientError(f"database error: {message}")


def tier_pairs(given: tuple[str, ...], option: str) -> dict[int, int]:
    """`TIER_ID=POINTS` options (repeatable) as {tier id: points}."""
    pairs: dict[int, int] = {}
    for item in given:
        tier, sep, points = item.partition("=")
        try:
            if not sep:
                raise ValueError
            pairs[int(tier)] = int(points)
        except ValueError:
            raise click.BadParameter(f"{item!r} is not TIER_ID=POINTS", param_hint=option) from None
    return pairs
