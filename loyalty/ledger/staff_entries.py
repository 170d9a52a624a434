"""One staff entry (a staff EARN, a REDEEM, a REFUND) and its account, written in order.

The account first, then the entry: the ledger's statement trigger checks the entry's
balance_after against the one before it and the account against its last entry, and
at COMMIT the account's totals against the ledger's (`ledger_totals`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, func, update

from loyalty.ledger.entries import entry_id
from loyalty.tables import accounts, ledger_entries


def write_entry(conn: Connection, account: Mapping[Any, Any], *, amount: int, total: str,
                total_delta: int, **entry: Any) -> tuple[UUID, dict[str, Any]]:
    """Move the balance by `amount` and the account's `total` by `total_delta`, with one
    entry of `entry`'s fields; returns the entry's id and the account as it now stands."""
    balance_after = account["balance"] + amount
    updated = conn.execute(
        update(accounts).where(accounts.c.id == account["id"])
        .values({"balance": balance_after, total: accounts.c[total] + total_delta,
                 "revision": accounts.c.revision + 1, "updated_at": func.now(),
                 "last_activity_at": func.now()})
        .returning(accounts)
    ).mappings().one()
    new_id = entry_id()
    conn.execute(ledger_entries.insert().values(
        id=new_id, account_id=account["id"], amount=amount, balance_after=balance_after,
        account_revision=account["revision"] + 1, **entry))
    return new_id, {**updated, "member_id": account["member_id"]}
