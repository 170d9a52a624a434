"""What a unit of earning writes (EARN entries, pending lots, processed records),
gathered while `loyalty.ledger.earning` decides its events, then sent as one statement
per table."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Connection

from loyalty.ledger import statements as sql
from loyalty.ledger.entries import EventOutcome, earn_entry, entry_id, processed_record
from loyalty.rules import EarnRule
from schemas.events import OrderCompletedEvent


class EarnWrites:
    """What a unit of earning writes, gathered, then sent as one statement per table."""

    def __init__(self) -> None:
        self.credits: dict[UUID, int] = {}
        self.changes: dict[UUID, int] = {}
        self.entries: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []
        self.lots: list[dict[str, Any]] = []

    def earn(self, account_id: UUID, balance_after: int, revision_after: int, rule: EarnRule,
             points: int, event_id: str, event_type: str, order: OrderCompletedEvent | None,
             description: str, **source: Any) -> UUID:
        """One EARN entry; `balance_after` and `revision_after` continue the account's chain."""
        entry = entry_id()
        self.credits[account_id] = self.credits.get(account_id, 0) + points
        self.changes[account_id] = self.changes.get(account_id, 0) + 1
        self.entries.append(earn_entry(entry, account_id, balance_after, revision_after, rule,
                                       points, event_id, event_type, order, description,
                                       **source))
        return entry

    def pending(self, account_id: UUID, points: int, until: datetime,
                order: OrderCompletedEvent, rule: EarnRule, tier_id: int | None) -> None:
        """An order's points as a pending lot: not in the balance until `until`."""
        self.lots.append({
            "account_id": account_id, "amount": points, "remaining": points,
            "status": "pending", "available_at": until, "order_id": order.order_id,
            "event_id": order.event_id, "rule_id": rule.id, "rule_revision": rule.revision,
            "order_total": order.total, "currency": order.currency, "tier_id": tier_id})

    def record(self, event_id: str, event_type: str, fingerprint: str, contact_id: str,
               account_id: UUID, order_id: str | None, outcome: str, points: int,
               entry: UUID | None, payload: str, detail: dict[str, Any] | None
               ) -> EventOutcome:
        """The event's processed record (its idempotency key), and what it reports."""
        row, reported = processed_record(event_id, event_type, fingerprint, contact_id,
                                         account_id, order_id, outcome, points, entry, payload,
                                         detail)
        self.records.append(row)
        return reported

    def write(self, conn: Connection) -> None:
        # The accounts first, then the entries in order: the ledger's statement trigger
        # checks each balance_after against the one before it, and the last against the
        # account.
        if self.credits:
            ids = sorted(self.credits)
            conn.exec_driver_sql(sql.CREDIT_ACCOUNTS, {
                "ids": ids, "points": [self.credits[a] for a in ids],
                "entries": [self.changes[a] for a in ids]})
        if self.entries:
            conn.exec_driver_sql(sql.INSERT_ENTRIES,
                                 sql.columns(self.entries, sql.ENTRY_COLUMNS))
        if self.records:
            conn.exec_driver_sql(sql.INSERT_PROCESSED,
                                 sql.columns(self.records, sql.PROCESSED_COLUMNS))
        if self.lots:
            conn.exec_driver_sql(sql.INSERT_PENDING_LOTS,
                                 sql.columns(self.lots, sql.PENDING_LOT_COLUMNS))
