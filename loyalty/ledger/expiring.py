"""Points that expire: the periodic `loyalty.program.expire_points` job, set-based.

Accounts are taken in chunks (`CHUNK`), one transaction per chunk: lock the chunk's
accounts in id order, read what expires, write one UPDATE of the accounts and one
INSERT of all EXPIRE entries (the lot trigger of 0011 uses the lots up). So 100,000
accounts cost a few hundred statements, not 100,000 transactions.

Idempotent by construction, so two runs (or two beats) at once expire nothing twice:
- `lots`: one EXPIRE per lot, keyed `expire:lot:<lot id>`; an expired lot has nothing
  left, and is not read again.
- `inactivity`: one EXPIRE per account and period of inactivity, keyed
  `expire:inactivity:<account>:<last_activity_at>`; an EXPIRE is not activity, so a
  second run for the same (or a later) moment finds the key and writes nothing.

After expiring, the run warns of what expires within `expiring_soon_days` of `as_of`
(`points.expiring_soon`, once per lot or per account and quiet period): one call of
`loyalty_warn_expiring` (0012), which records the warnings and their events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Engine

from loyalty.ledger import program as program_settings
from loyalty.ledger.boundary import read, run
from loyalty.ledger.entries import entry_id
from loyalty.ledger.statements import ENTRY_COLUMNS, INSERT_ENTRIES, columns, set_based

log = logging.getLogger(__name__)

#: Accounts per transaction: big enough that statements are few, small enough that a
#: chunk's locks are held for well under a second.
CHUNK = 5000

#: Every statement below compares with the cutoff `as_of - months` (months as PostgreSQL
#: counts them: 31 March minus one month is 28 or 29 February).
CUTOFF = set_based(
    "SELECT CAST(:as_of AS timestamptz) - make_interval(months => CAST(:months AS int))")
LOTS_DUE = set_based(
    "SELECT DISTINCT account_id FROM point_lots WHERE status = 'available' AND remaining > 0"
    " AND available_at <= CAST(:cutoff AS timestamptz) ORDER BY account_id")
INACTIVE_DUE = set_based(
    "SELECT id FROM accounts WHERE balance > 0"
    " AND last_activity_at <= CAST(:cutoff AS timestamptz) ORDER BY id")
#: Joins with `unnest` rather than `= ANY(:array)`: a prepared statement keeps a generic
#: plan, and for `= ANY` that plan can be a scan that grows with the table (statements.py).
LOCK = set_based(
    "SELECT a.id, a.balance, a.revision, a.last_activity_at"
    " FROM unnest(CAST(:ids AS uuid[])) AS k(id) JOIN accounts a ON a.id = k.id"
    " ORDER BY a.id FOR UPDATE OF a")
EXPIRING_LOTS = set_based(
    "SELECT l.id, l.account_id, l.remaining, l.available_at"
    " FROM unnest(CAST(:ids AS uuid[])) AS k(id) JOIN point_lots l ON l.account_id = k.id"
    " AND l.status = 'available' AND l.remaining > 0"
    " AND l.available_at <= CAST(:cutoff AS timestamptz)"
    " ORDER BY l.account_id, l.available_at, l.id")
INACTIVE_ACCOUNTS = set_based(
    "SELECT a.id, a.balance, a.last_activity_at"
    " FROM unnest(CAST(:ids AS uuid[])) AS k(id) JOIN accounts a ON a.id = k.id"
    " WHERE a.balance > 0 AND a.last_activity_at <= CAST(:cutoff AS timestamptz)")
KEYS_TAKEN = set_based(
    "SELECT e.idempotency_key FROM unnest(CAST(:keys AS text[])) AS k(key)"
    " JOIN ledger_entries e ON e.idempotency_key = k.key AND e.event_id IS NULL")
#: The account's last activity does not move: expiring is not activity.
DEBIT_EXPIRED = set_based(
    "UPDATE accounts a SET balance = a.balance - d.points, expired = a.expired + d.points,"
    " revision = a.revision + d.entries, updated_at = now()"
    " FROM unnest(CAST(:ids AS uuid[]), CAST(:points AS bigint[]), CAST(:entries AS bigint[]))"
    " AS d(id, points, entries) WHERE a.id = d.id")

WARN_EXPIRING = set_based(
    "SELECT public.loyalty_warn_expiring(CAST(:as_of AS timestamptz), CAST(:days AS int))")

#: What one expiration decides for an account: (idempotency key, points, description).
Expiry = tuple[str, int, str]


def expire_points(engine: Engine, as_of: datetime, expiring_soon_days: int = 7
                  ) -> dict[str, Any]:
    """Expire what is due at `as_of` under the program's expiration mode, then warn of
    what expires within `expiring_soon_days`."""
    settings = read(engine, program_settings.settings)
    report: dict[str, Any] = {"as_of": as_of.isoformat(), "mode": settings.expiration_mode,
                              "accounts": 0, "entries": 0, "points": 0, "chunks": 0,
                              "expiring_soon": 0}
    if settings.expiration_mode == "off":
        return report
    months, percentage = settings.expiration_months, settings.expiration_percentage
    due_sql = LOTS_DUE if settings.expiration_mode == "lots" else INACTIVE_DUE
    cutoff = read(engine, lambda conn: conn.exec_driver_sql(
        CUTOFF, {"as_of": as_of, "months": months}).scalar_one())
    due: list[UUID] = read(engine, lambda conn: [r[0] for r in conn.exec_driver_sql(
        due_sql, {"cutoff": cutoff})])

    def decide(conn: Connection, ids: list[UUID]) -> dict[UUID, list[Expiry]]:
        if settings.expiration_mode == "lots":
            return _lots(conn, ids, cutoff)
        assert percentage is not None
        return _inactivity(conn, ids, cutoff, months, percentage)

    for start in range(0, len(due), CHUNK):
        ids = due[start:start + CHUNK]
        accounts, entries, points = run(
            engine, lambda conn, ids=ids: _chunk(conn, ids, decide))  # type: ignore[misc]
        report["accounts"] += accounts
        report["entries"] += entries
        report["points"] += points
        report["chunks"] += 1
        log.info("expire_points: %d of %d accounts done", start + len(ids), len(due))
    report["expiring_soon"] = run(engine, lambda conn: conn.exec_driver_sql(
        WARN_EXPIRING, {"as_of": as_of, "days": expiring_soon_days}).scalar_one())
    return report


def _chunk(conn: Connection, ids: list[UUID],
           decide: Callable[[Connection, list[UUID]], dict[UUID, list[Expiry]]]
           ) -> tuple[int, int, int]:
    locked = {r["id"]: r for r in conn.exec_driver_sql(LOCK, {"ids": ids}).mappings()}
    decided = decide(conn, sorted(locked))
    rows: list[dict[str, Any]] = []
    debits: dict[UUID, tuple[int, int]] = {}
    for account, expiries in decided.items():
        balance, revision = locked[account]["balance"], locked[account]["revision"]
        for key, points, description in expiries:
            balance -= points
            revision += 1
            rows.append(_expire_entry(account, points, balance, revision, key, description))
        debits[account] = (sum(p for _k, p, _d in expiries), len(expiries))
    if not rows:
        return 0, 0, 0
    conn.exec_driver_sql(DEBIT_EXPIRED, {"ids": list(debits),
                                         "points": [p for p, _n in debits.values()],
                                         "entries": [n for _p, n in debits.values()]})
    conn.exec_driver_sql(INSERT_ENTRIES, columns(rows, ENTRY_COLUMNS))
    return len(debits), len(rows), sum(p for p, _n in debits.values())


def _lots(conn: Connection, ids: list[UUID], cutoff: datetime) -> dict[UUID, list[Expiry]]:
    """One EXPIRE per lot whose months have run out by `as_of`, oldest first."""
    decided: dict[UUID, list[Expiry]] = {}
    for lot in conn.exec_driver_sql(EXPIRING_LOTS, {"ids": ids, "cutoff": cutoff}).mappings():
        decided.setdefault(lot["account_id"], []).append((
            f"expire:lot:{lot['id']}", lot["remaining"],
            f"points available since {lot['available_at']:%Y-%m-%d} expired"))
    return decided


def _inactivity(conn: Connection, ids: list[UUID], cutoff: datetime, months: int | None,
                percentage: int) -> dict[UUID, list[Expiry]]:
    """`percentage` of the balance, once per period without activity."""
    rows = conn.exec_driver_sql(INACTIVE_ACCOUNTS, {"ids": ids, "cutoff": cutoff}).mappings().all()
    keys = {r["id"]: f"expire:inactivity:{r['id']}:{r['last_activity_at'].isoformat()}"
            for r in rows}
    taken = {k for (k,) in conn.exec_driver_sql(KEYS_TAKEN, {"keys": list(keys.values())})}
    decided: dict[UUID, list[Expiry]] = {}
    for r in rows:
        points = inactivity_points(r["balance"], percentage)
        if points and keys[r["id"]] not in taken:
            decided[r["id"]] = [(keys[r["id"]], points,
                                 f"{percentage}% of the balance expired after {months}"
                                 " months without activity")]
    return decided


def inactivity_points(balance: int, percentage: int) -> int:
    """What `percentage` of `balance` expires: rounded down, never a fraction of a point."""
    return balance * percentage // 100


def _expire_entry(account: UUID, points: int, balance_after: int, revision: int, key: str,
                  description: str) -> dict[str, Any]:
    return {**{c: None for c in ENTRY_COLUMNS}, "id": entry_id(), "account_id": account,
            "type": "EXPIRE", "amount": -points, "balance_after": balance_after,
            "account_revision": revision, "description": description[:256],
            "idempotency_key": key}
