"""Reversing: order refunds turned into REVERSE entries, set-based like earning.

Refunds are applied after the batch's orders (`earning.events_work`), in stream
order among themselves: the accounts locked in id order, then one read each for
what the orders earned, their earlier refunds and the events seen, then the
arithmetic (`loyalty.refunds`) in Python, then one statement per table. A single
refund is a batch of one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import Connection

from loyalty.errors import (
    CurrencyMismatch,
    IdempotencyConflict,
    LoyaltyError,
    OrderNotFound,
)
from loyalty.ledger import statements as sql
from loyalty.ledger.entries import EventOutcome, entry_id, processed_record, settled_already
from loyalty.refunds import reversal
from schemas.events import OrderRefundedEvent

Result = EventOutcome | LoyaltyError


class _Order:
    """What a refunded order earned, and what its refunds have done so far."""

    def __init__(self, row: Mapping[Any, Any]) -> None:
        self.earn_entry_id: UUID | None = row["earn_entry_id"]
        self.earned: int = row["earned"]
        self.total: Decimal | None = row["total"]
        self.currency: str | None = row["currency"]
        self.refunds: dict[str, tuple[Decimal, str]] = {}
        self.refunded = Decimal(0)
        #: Taken from the balance or cancelled while pending: what refunds have had.
        self.taken = 0
        self.lot_id: int | None = row["lot_id"]
        #: What is still pending of the order's points (None once available).
        self.pending: int | None = row["pending"]

    def add(self, refund_id: str, amount: Decimal, currency: str, taken: int,
            cancelled: int = 0) -> None:
        self.refunds[refund_id] = (amount, currency)
        self.refunded += amount
        self.taken += taken + cancelled
        if self.pending is not None:
            self.pending -= cancelled


def refunds_work(conn: Connection, refunds: Sequence[tuple[int, OrderRefundedEvent]],
                 results: list[Any]) -> None:
    """Apply refunds in stream order; each result goes in its slot of `results`."""
    if not refunds:
        return
    events = [(i, e, *e.fingerprint_and_json()) for i, e in refunds]
    contact_ids = sorted({e.contact_id for _, e, _, _ in events})
    locked = {row["contact_id"]: row for row in conn.exec_driver_sql(
        sql.LOCK_ACCOUNTS_BY_CONTACT, {"contacts": contact_ids}).mappings()}
    seen = {row["event_id"]: row for row in conn.exec_driver_sql(
        sql.SEEN_EVENTS, {"events": sorted({e.event_id for _, e, _, _ in events})}).mappings()}
    pairs = sorted({(locked[e.contact_id]["id"], e.order_id) for _, e, _, _ in events
                    if e.contact_id in locked})
    orders: dict[tuple[UUID, str], _Order] = {}
    if pairs:
        arrays = {"accounts": [a for a, _ in pairs], "orders": [o for _, o in pairs]}
        orders = {(row["account_id"], row["order_id"]): _Order(row) for row in
                  conn.exec_driver_sql(sql.REFUNDED_ORDERS, arrays).mappings()}
        for row in conn.exec_driver_sql(sql.ORDER_REFUNDS, arrays).mappings():
            order = orders.get((row["account_id"], row["order_id"]))
            if order is not None:
                order.add(row["refund_id"], row["amount"], row["currency"], row["taken"],
                          row["cancelled"])

    balances = {row["id"]: row["balance"] for row in locked.values()}
    revisions = {row["id"]: row["revision"] for row in locked.values()}
    writes = _Writes()
    #: The first occurrence of each event_id in this batch: its slot and fingerprint.
    first: dict[str, tuple[int, str]] = {}
    for i, event, fingerprint, payload in events:
        account = settled_already(results, i, event, fingerprint, first, seen, locked)
        if account is None:
            continue
        account_id = account["id"]
        order = orders.get((account_id, event.order_id))
        if order is None:
            results[i] = OrderNotFound(
                f"order {event.order_id!r} of contact_id {event.contact_id!r} has not been"
                " applied (yet)")
            continue
        if order.currency is not None and order.currency != event.currency:
            results[i] = CurrencyMismatch(
                f"refund {event.refund_id!r} is in {event.currency}; order {event.order_id!r}"
                f" was in {order.currency}")
            continue
        known = order.refunds.get(event.refund_id)
        if known is not None:
            if (known[0], known[1]) != (event.amount, event.currency):
                results[i] = IdempotencyConflict(
                    f"refund {event.refund_id!r} of order {event.order_id!r} was already applied"
                    f" with amount {format(known[0].normalize(), 'f')} {known[1]}")
                continue
            results[i] = writes.record(event, fingerprint, account_id, "duplicate_refund", 0,
                                       None, payload)
            continue
        pending = order.pending is not None
        take = reversal(earned=order.earned, total=order.total, refunded_before=order.refunded,
                        amount=event.amount, taken_before=order.taken,
                        balance=order.pending if order.pending is not None
                        else balances[account_id])
        entry, cancelled = None, 0
        if pending:
            # Points not yet available are cancelled, not reversed: no entry, no balance.
            assert order.lot_id is not None
            cancelled, take = take.taken, replace(take, taken=0)
            if cancelled:
                writes.cancels[order.lot_id] = writes.cancels.get(order.lot_id, 0) + cancelled
        elif take.taken:
            assert order.earn_entry_id is not None
            balances[account_id] -= take.taken
            revisions[account_id] += 1
            entry = writes.reverse(event, account_id, balances[account_id],
                                   revisions[account_id], take.taken, order.earn_entry_id)
        order.add(event.refund_id, event.amount, event.currency, take.taken, cancelled)
        detail = {"order_id": event.order_id, "refund_id": event.refund_id,
                  "due": take.due, "taken": take.taken, "shortfall": take.shortfall}
        if pending:
            detail["cancelled"] = cancelled
        results[i] = writes.record(event, fingerprint, account_id,
                                   "reversed" if entry else "refund_recorded", take.taken,
                                   entry, payload, detail)
        writes.refunds.append({
            "account_id": account_id, "order_id": event.order_id, "refund_id": event.refund_id,
            "event_id": event.event_id, "amount": event.amount, "currency": event.currency,
            "earn_entry_id": order.earn_entry_id, "reverse_entry_id": entry,
            "due": take.due, "taken": take.taken, "shortfall": take.shortfall,
            "cancelled": cancelled})
    writes.write(conn)


class _Writes:
    """What a batch of refunds writes, sent as one statement per table."""

    def __init__(self) -> None:
        self.debits: dict[UUID, int] = {}
        self.changes: dict[UUID, int] = {}
        self.entries: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []
        self.refunds: list[dict[str, Any]] = []
        #: Pending lot -> points the refunds cancel of it.
        self.cancels: dict[int, int] = {}

    def reverse(self, event: OrderRefundedEvent, account_id: UUID, balance_after: int,
                revision_after: int, points: int, earn_entry_id: UUID) -> UUID:
        entry = entry_id()
        self.debits[account_id] = self.debits.get(account_id, 0) + points
        self.changes[account_id] = self.changes.get(account_id, 0) + 1
        self.entries.append({
            "id": entry, "account_id": account_id, "type": "REVERSE", "amount": -points,
            "balance_after": balance_after, "account_revision": revision_after,
            "description": f"Refund {event.refund_id} of order {event.order_id}"[:256],
            "idempotency_key": f"event:{event.event_id}", "event_type": "order.refunded",
            "event_id": event.event_id, "order_id": event.order_id, "rule_id": None,
            "rule_revision": None, "order_total": None, "currency": None, "activity": None,
            "reference_id": None, "refund_id": event.refund_id,
            "reverses_entry_id": earn_entry_id})
        return entry

    def record(self, event: OrderRefundedEvent, fingerprint: str, account_id: UUID,
               outcome: str, points: int, entry: UUID | None, payload: str,
               detail: dict[str, Any] | None = None) -> EventOutcome:
        row, reported = processed_record(event.event_id, "order.refunded", fingerprint,
                                         event.contact_id, account_id, event.order_id, outcome,
                                         points, entry, payload, detail)
        self.records.append(row)
        return reported

    def write(self, conn: Connection) -> None:
        # Accounts first: the ledger's statement triggers compare the entries with them.
        if self.debits:
            ids = sorted(self.debits)
            conn.exec_driver_sql(sql.DEBIT_REVERSED, {
                "ids": ids, "points": [self.debits[a] for a in ids],
                "entries": [self.changes[a] for a in ids]})
        if self.entries:
            conn.exec_driver_sql(sql.INSERT_ENTRIES, sql.columns(self.entries, sql.ENTRY_COLUMNS))
        if self.records:
            conn.exec_driver_sql(sql.INSERT_PROCESSED,
                                 sql.columns(self.records, sql.PROCESSED_COLUMNS))
        if self.refunds:
            conn.exec_driver_sql(sql.INSERT_REFUNDS, sql.columns(self.refunds, sql.REFUND_COLUMNS))
        if self.cancels:
            lots = sorted(self.cancels)
            conn.exec_driver_sql(sql.CANCEL_PENDING, {
                "ids": lots, "points": [self.cancels[i] for i in lots]})
