"""Tiers in the database: their definitions, edited by staff under a revision, and the
accounts' tiers, recomputed by `loyalty_recalculate_tiers` (migration 0011).

That one SQL function owns the arithmetic (tier points over the rolling window, the
highest tier they reach), so the ledger's trigger (in the transaction of every entry
that changes tier points) and the periodic `loyalty.program.recalculate_tiers` job (as
the window slides) cannot disagree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Engine, delete, func, select, update

from loyalty.errors import InvalidTier, TierError, TierNotFound
from loyalty.ledger import program as program_settings
from loyalty.ledger.boundary import LedgerIntegrityError, read, run
from loyalty.ledger.expiring import CHUNK
from loyalty.ledger.statements import set_based
from loyalty.tables import tiers

log = logging.getLogger(__name__)

MAX_REQUIRED_POINTS = 9_999_999
ALL_ACCOUNTS = "SELECT id FROM accounts ORDER BY id"
#: The periodic job locks a chunk's accounts (in id order, as every writer does) before
#: recomputing their tiers: an `account.tier_changed` (0012) then takes a revision no
#: concurrent entry can pass before it commits, keeping the per-account event order.
LOCK_CHUNK = set_based(
    "SELECT a.id FROM unnest(CAST(:ids AS uuid[])) AS k(id) JOIN accounts a ON a.id = k.id"
    " ORDER BY a.id FOR UPDATE OF a")
RECALCULATE = set_based(
    "SELECT public.loyalty_recalculate_tiers(CAST(:ids AS uuid[]), CAST(:as_of AS timestamptz))")
REFUSED = {
    "uq_tiers_name": "another tier has this name",
    "uq_tiers_required_points": "another tier requires the same points",
    "tiers_at_most_20": "a program has at most 20 tiers",
}


def tier_json(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "required_points": row["required_points"],
            "description": row["description"], "revision": row["revision"]}


def validate_tier(name: str, required_points: int, description: str | None) -> None:
    if not 1 <= len(name) <= 50:
        raise InvalidTier("name must be 1 to 50 characters")
    if not 1 <= required_points <= MAX_REQUIRED_POINTS:
        raise InvalidTier(f"required_points must be 1 to {MAX_REQUIRED_POINTS}")
    if description is not None and len(description) > 500:
        raise InvalidTier("description must be at most 500 characters")


def list_tiers(engine: Engine) -> dict[str, Any]:
    rows = read(engine, lambda conn: conn.execute(
        select(tiers).order_by(tiers.c.required_points)).mappings().all())
    return {"items": [tier_json(r) for r in rows], "next_cursor": None}


def create_tier(engine: Engine, *, name: str, required_points: int,
                description: str | None = None) -> dict[str, Any]:
    validate_tier(name, required_points, description)
    return _write(engine, lambda conn: conn.execute(tiers.insert().values(
        name=name, required_points=required_points, description=description
    ).returning(tiers)).mappings().one())


def update_tier(engine: Engine, tier_id: int, *, expected_revision: int | None = None,
                **given: Any) -> dict[str, Any]:
    def work(conn: Connection) -> Mapping[Any, Any]:
        current = conn.execute(select(tiers).where(tiers.c.id == tier_id).with_for_update()
                               ).mappings().first()
        if current is None:
            raise TierNotFound(f"no tier with id {tier_id}")
        if expected_revision is not None and expected_revision != current["revision"]:
            raise TierError(f"tier {tier_id} is at revision {current['revision']},"
                            f" not {expected_revision}")
        changes = {k: v for k, v in given.items() if v is not None}
        merged = {**dict(current), **changes}
        validate_tier(merged["name"], merged["required_points"], merged["description"])
        if all(current[k] == v for k, v in changes.items()):
            return current
        return conn.execute(update(tiers).where(tiers.c.id == tier_id).values(
            **changes, revision=tiers.c.revision + 1, updated_at=func.now()
        ).returning(tiers)).mappings().one()

    return _write(engine, work)


def delete_tier(engine: Engine, tier_id: int) -> dict[str, Any]:
    """Remove a tier; its accounts fall to the tier below at the next recalculation."""
    def work(conn: Connection) -> Mapping[Any, Any]:
        row = conn.execute(delete(tiers).where(tiers.c.id == tier_id).returning(tiers)
                           ).mappings().first()
        if row is None:
            raise TierNotFound(f"no tier with id {tier_id}")
        return row

    return _write(engine, work)


def _write(engine: Engine, work: Callable[[Connection], Mapping[Any, Any]]) -> dict[str, Any]:
    try:
        return tier_json(run(engine, work))
    except LedgerIntegrityError as exc:
        raise TierError(REFUSED.get(exc.constraint or "", str(exc))) from None


def recalculate_tiers(engine: Engine, as_of: datetime) -> dict[str, Any]:
    """Every account's tier as of `as_of`, in chunks; only while tiers are ACTIVE."""
    status = read(engine, program_settings.settings).tiers_status
    report: dict[str, Any] = {"as_of": as_of.isoformat(), "status": status, "accounts": 0,
                              "changed": 0, "chunks": 0}
    if status != "ACTIVE":
        return report
    ids: list[UUID] = read(engine, lambda conn: [r[0] for r in conn.exec_driver_sql(
        ALL_ACCOUNTS)])
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start:start + CHUNK]
        changed = run(engine, lambda conn, chunk=chunk: _recalculate(  # type: ignore[misc]
            conn, chunk, as_of))
        report["accounts"] += len(chunk)
        report["changed"] += changed
        report["chunks"] += 1
        log.info("recalculate_tiers: %d of %d accounts done", start + len(chunk), len(ids))
    return report


def _recalculate(conn: Connection, ids: list[UUID], as_of: datetime) -> int:
    conn.exec_driver_sql(LOCK_CHUNK, {"ids": ids}).all()
    changed: int = conn.exec_driver_sql(RECALCULATE, {"ids": ids, "as_of": as_of}).scalar_one()
    return changed
