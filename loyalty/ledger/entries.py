"""What an event's earn writes and what it reports: pure shapes, no SQL.

`EventOutcome` is the result of one event, `processed_record` the row that keeps it;
`earn_entry` is the ledger row of an EARN; `above_ceiling` and `order_change` are the
rules every way of earning obeys.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any
from uuid import UUID

from loyalty.errors import (
    AccountNotFound,
    BalanceAboveMaximum,
    IdempotencyConflict,
    LoyaltyError,
    PointsAboveMaximum,
)
from loyalty.ids import uuid7
from loyalty.rules import MAX_EARN_POINTS, EarnRule
from schemas.events import MAX_BALANCE, OrderCompletedEvent


@dataclass(frozen=True)
class EventOutcome:
    event_id: str
    outcome: str
    points: int
    account_id: str
    ledger_entry_id: str | None
    #: True when the event had been applied before and this delivery changed nothing.
    duplicate: bool = False
    #: What the outcome needs said, e.g. both totals of a `duplicate_order_changed`.
    detail: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        shape = {
            "event_id": self.event_id,
            "outcome": self.outcome,
            "points": self.points,
            "account_id": self.account_id,
            "ledger_entry_id": self.ledger_entry_id,
            "duplicate": self.duplicate,
        }
        if self.detail is not None:
            shape["detail"] = self.detail
        return shape


def settled_already(results: list[Any], i: int, event: Any, fingerprint: str,
                    first: dict[str, tuple[int, str]], seen: Mapping[str, Mapping[Any, Any]],
                    locked: Mapping[str, Mapping[Any, Any]]) -> Mapping[Any, Any] | None:
    """What every event of a batch goes through before it is decided: the same event_id
    earlier in this batch (a duplicate, or a conflict if its content differs), an earlier
    delivery (`seen`), an account that does not exist. Sets `results[i]` and returns None
    when that settles it; otherwise records it in `first` and returns its locked account."""
    earlier = first.get(event.event_id)
    done = results[earlier[0]] if earlier is not None else None
    if earlier is not None and earlier[1] == fingerprint:
        results[i] = replace(done, duplicate=True) if isinstance(done, EventOutcome) else done
        return None
    if isinstance(done, EventOutcome):
        results[i] = IdempotencyConflict(
            f"event_id {event.event_id!r} was already applied with a different payload")
        return None
    first[event.event_id] = (i, fingerprint)
    if event.event_id in seen:
        try:
            results[i] = seen_outcome(seen[event.event_id], event.event_id, fingerprint)
        except IdempotencyConflict as exc:
            results[i] = exc
        return None
    account = locked.get(event.contact_id)
    if account is None:
        results[i] = AccountNotFound(f"no loyalty account for contact_id {event.contact_id!r}")
    return account


def processed_record(event_id: str, event_type: str, fingerprint: str, contact_id: str,
                     account_id: UUID, order_id: str | None, outcome: str, points: int,
                     entry: UUID | None, payload: str, detail: dict[str, Any] | None
                     ) -> tuple[dict[str, Any], EventOutcome]:
    """An applied event's processed row (its idempotency key), and the outcome it reports:
    what `seen_outcome` answers to every later delivery."""
    row = {
        "event_id": event_id, "event_type": event_type, "fingerprint": fingerprint,
        "contact_id": contact_id, "account_id": account_id, "order_id": order_id,
        "outcome": outcome, "points": points, "ledger_entry_id": entry, "payload": payload,
        "detail": json.dumps(detail) if detail else None}
    return row, EventOutcome(event_id=event_id, outcome=outcome, points=points,
                             account_id=str(account_id),
                             ledger_entry_id=str(entry) if entry else None, detail=detail)


def seen_outcome(row: Mapping[Any, Any], event_id: str, fingerprint: str) -> EventOutcome:
    """What an earlier delivery of this event did, or a conflict if its content differed."""
    if row["fingerprint"] != fingerprint:
        raise IdempotencyConflict(
            f"event_id {event_id!r} was already applied with a different payload"
        )
    return EventOutcome(
        event_id=event_id,
        outcome=row["outcome"],
        points=row["points"],
        account_id=str(row["account_id"]),
        ledger_entry_id=str(row["ledger_entry_id"]) if row["ledger_entry_id"] else None,
        duplicate=True,
        detail=row.get("detail"),
    )


def above_ceiling(points: int, balance: int) -> LoyaltyError | None:
    """Why an earn of `points` on `balance` must not happen: one ceiling for every way in."""
    if points > MAX_EARN_POINTS:
        return PointsAboveMaximum(
            f"the rule gives {points} points; one event earns at most {MAX_EARN_POINTS}")
    if balance + points > MAX_BALANCE:
        return BalanceAboveMaximum(
            f"{points} points would take the balance from {balance} to {balance + points},"
            f" above the maximum of {MAX_BALANCE}")
    return None


def order_change(first_event_id: str, first: Mapping[str, Any] | None,
                 event: OrderCompletedEvent) -> dict[str, Any] | None:
    """How a re-sent order differs from the one that earned, or None if it does not
    (or if that one was applied before payloads were kept)."""
    if not first or "total" not in first:
        return None
    if Decimal(first["total"]) == event.total and first.get("currency") == event.currency:
        return None
    return {"order_id": event.order_id, "earned_event_id": first_event_id,
            "earned_total": first["total"], "earned_currency": first.get("currency"),
            "total": format(event.total.normalize(), "f"), "currency": event.currency}


def entry_id() -> UUID:
    """A ledger entry's id: time-ordered (`loyalty.ids`), so that new entries land at the
    right edge of the primary key."""
    return uuid7()


def earn_entry(entry: UUID, account_id: UUID, balance_after: int, revision_after: int,
               rule: EarnRule, points: int, event_id: str, event_type: str,
               order: OrderCompletedEvent | None, description: str, *,
               activity: str | None = None, reference_id: str | None = None,
               tier_id: int | None = None) -> dict[str, Any]:
    """The EARN row: it names the rule revision and, for an order, what it was computed from
    (for an activity, the activity and its reference)."""
    return {
        "id": entry,
        "account_id": account_id,
        "type": "EARN",
        "amount": points,
        "balance_after": balance_after,
        "account_revision": revision_after,
        "description": description[:256],
        "idempotency_key": f"event:{event_id}",
        "event_type": event_type,
        "event_id": event_id,
        "order_id": order.order_id if order else None,
        "rule_id": rule.id,
        "rule_revision": rule.revision,
        "order_total": order.total if order else None,
        "currency": order.currency if order else None,
        "activity": activity,
        "reference_id": reference_id,
        "refund_id": None,
        "reverses_entry_id": None,
        "tier_id": tier_id,
    }
