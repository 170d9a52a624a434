"""Earning: events turned into EARN entries, set-based, many events per transaction.

`apply_events` applies a batch with the effect of applying its events in order:
signups one by one (which contact gets a contested member_id depends on the
order), then orders in rounds, their accounts locked in id order (so concurrent
batches never deadlock each other), one multi-row INSERT per table and one
UPDATE for all accounts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Engine, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from loyalty.errors import AccountNotFound, IdempotencyConflict, LoyaltyError, NoActiveRule
from loyalty.ledger import statements as sql
from loyalty.ledger.accounts import lock_account
from loyalty.ledger.boundary import guarded, run
from loyalty.ledger.earn_rules import active_rules
from loyalty.ledger.entries import (
    EventOutcome,
    above_ceiling,
    earn_entry,
    entry_id,
    order_change,
    seen_outcome,
)
from loyalty.rules import EarnRule, select_rule
from loyalty.tables import accounts, contacts, ledger_entries, processed_events
from schemas.events import OrderCompletedEvent, SignupEvent

Event = SignupEvent | OrderCompletedEvent
Result = EventOutcome | LoyaltyError


def apply_signup(engine: Engine, event: SignupEvent) -> EventOutcome:
    return run(engine, signup_work(event))


def apply_order(engine: Engine, event: OrderCompletedEvent) -> EventOutcome:
    return run(engine, _order_work(event))


def apply_events(engine: Engine, events: Sequence[Event]) -> list[Result]:
    """Apply many events in one transaction, with the effect of applying them in order.

    An event that cannot be applied gets its error in its slot of the result and
    writes nothing; the others commit.
    """
    if not events:
        return []
    return run(engine, lambda conn: events_work(conn, events))


def events_work(conn: Connection, events: Sequence[Event]) -> list[Result]:
    results: list[Result | None] = [None] * len(events)
    # Signups first, in stream order: an order may follow its signup in the same batch.
    # Two batches of signups for the same contacts can deadlock; PostgreSQL aborts one
    # and the transaction boundary runs it again.
    for i, event in enumerate(events):
        if isinstance(event, SignupEvent):
            results[i] = guarded(conn, signup_work(event))
    orders = [(i, e) for i, e in enumerate(events) if isinstance(e, OrderCompletedEvent)]
    if orders:
        _orders(conn, orders, results)
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def signup_work(event: SignupEvent) -> Callable[[Connection], EventOutcome]:
    fingerprint, payload = event.fingerprint_and_json()

    def work(conn: Connection) -> EventOutcome:
        seen = _seen_event(conn, event.event_id, fingerprint)
        if seen:
            return seen
        ins = pg_insert(contacts).values(
            contact_id=event.contact_id,
            member_id=event.member_id,
            email=event.email,
            name=event.name,
            profile_at=event.occurred_at,
        )
        conn.execute(
            ins.on_conflict_do_update(
                index_elements=[contacts.c.contact_id],
                set_={
                    "member_id": func.coalesce(ins.excluded.member_id, contacts.c.member_id),
                    "email": func.coalesce(ins.excluded.email, contacts.c.email),
                    "name": func.coalesce(ins.excluded.name, contacts.c.name),
                    "profile_at": ins.excluded.profile_at,
                    "updated_at": func.now(),
                },
                # A late re-delivery of an older signup must not undo newer details.
                where=contacts.c.profile_at <= ins.excluded.profile_at,
            )
        )
        conn.execute(
            pg_insert(accounts)
            .values(contact_id=event.contact_id)
            .on_conflict_do_nothing(index_elements=[accounts.c.contact_id])
        )
        account = lock_account(conn, contact_id=event.contact_id)
        assert account is not None
        seen = _seen_event(conn, event.event_id, fingerprint)
        if seen:
            return seen
        record = {"event_id": event.event_id, "event_type": "signup",
                  "fingerprint": fingerprint, "contact_id": event.contact_id,
                  "account_id": account["id"], "payload": json.loads(payload)}
        already = conn.execute(
            select(ledger_entries.c.id).where(
                ledger_entries.c.account_id == account["id"],
                ledger_entries.c.type == "EARN",
                ledger_entries.c.event_type == "signup",
            )
        ).first()
        if already:
            return _record(conn, record, "already_signed_up")
        rule = select_rule(active_rules(conn, "signup"), "signup", None)
        if rule is None:
            # The contact and account are real even while the signup bonus is paused.
            return _record(conn, record, "no_rule")
        refused = above_ceiling(rule.points_for(), account["balance"])
        if refused:
            raise refused
        entry = _earn(conn, account, rule, rule.points_for(), event.event_id,
                      "signup", None, rule.name)
        return _record(conn, record, "earned", rule.points_for(), entry)

    return work


def _order_work(event: OrderCompletedEvent) -> Callable[[Connection], EventOutcome]:
    fingerprint, payload = event.fingerprint_and_json()

    def work(conn: Connection) -> EventOutcome:
        # Looked up once, after the account lock that serialises deliveries of this event.
        account = lock_account(conn, contact_id=event.contact_id)
        seen = _seen_event(conn, event.event_id, fingerprint)
        if seen:
            return seen
        if account is None:
            raise AccountNotFound(f"no loyalty account for contact_id {event.contact_id!r}")
        record = {"event_id": event.event_id, "event_type": "order.completed",
                  "fingerprint": fingerprint, "contact_id": event.contact_id,
                  "account_id": account["id"], "order_id": event.order_id,
                  "payload": json.loads(payload)}
        earned_before = conn.execute(
            select(ledger_entries.c.event_id, processed_events.c.payload)
            .select_from(ledger_entries.outerjoin(
                processed_events, processed_events.c.event_id == ledger_entries.c.event_id))
            .where(
                ledger_entries.c.account_id == account["id"],
                ledger_entries.c.type == "EARN",
                ledger_entries.c.order_id == event.order_id,
            )
        ).first()
        if earned_before:
            detail = order_change(earned_before.event_id, earned_before.payload, event)
            return _record(conn, record, "duplicate_order_changed" if detail
                           else "duplicate_order", detail=detail)
        rule = select_rule(active_rules(conn, "order.completed"), "order.completed",
                           event.currency)
        if rule is None:
            raise NoActiveRule(f"no active order.completed rule for currency {event.currency}")
        points = rule.points_for(event.total)
        if points == 0:
            return _record(conn, record, "no_points")
        refused = above_ceiling(points, account["balance"])
        if refused:
            raise refused
        entry = _earn(conn, account, rule, points, event.event_id,
                      "order.completed", event, f"Order {event.order_id}")
        return _record(conn, record, "earned", points, entry)

    return work


def _seen_event(conn: Connection, event_id: str, fingerprint: str) -> EventOutcome | None:
    row = conn.execute(
        select(processed_events).where(processed_events.c.event_id == event_id)
    ).mappings().first()
    if row is None:
        return None
    return seen_outcome(row, event_id, fingerprint)


def _orders(conn: Connection, orders: list[tuple[int, OrderCompletedEvent]],
            results: list[Result | None]) -> None:
    """Apply orders in rounds: each round takes one occurrence of every event_id.

    A later occurrence of an event_id is a duplicate of an applied earlier one, or a
    conflict if its content differs; if the earlier one failed, it is tried afresh
    in the next round, as it would be one by one.
    """
    by_index = dict(orders)
    pending = orders
    while pending:
        taken: dict[str, int] = {}
        round_items: list[tuple[int, OrderCompletedEvent]] = []
        later: list[tuple[int, OrderCompletedEvent]] = []
        for i, event in pending:
            if event.event_id in taken:
                later.append((i, event))
            else:
                taken[event.event_id] = i
                round_items.append((i, event))
        _orders_round(conn, round_items, results)
        pending = []
        for i, event in later:
            first = taken[event.event_id]
            done = results[first]
            same = event.fingerprint() == by_index[first].fingerprint()
            if isinstance(done, EventOutcome):
                results[i] = replace(done, duplicate=True) if same else IdempotencyConflict(
                    f"event_id {event.event_id!r} was already applied with a different payload")
            elif same:
                results[i] = done
            else:
                pending.append((i, event))


def _orders_round(conn: Connection, orders: list[tuple[int, OrderCompletedEvent]],
                  results: list[Result | None]) -> None:
    primaries = [(i, event, *event.fingerprint_and_json()) for i, event in orders]
    contact_ids = sorted({e.contact_id for _, e, _, _ in primaries})
    locked = {row["contact_id"]: row for row in conn.exec_driver_sql(
        sql.LOCK_ACCOUNTS_BY_CONTACT, {"contacts": contact_ids}).mappings()}
    # Looked up after the locks, which serialise concurrent deliveries of an event.
    seen = {row["event_id"]: row for row in conn.exec_driver_sql(
        sql.SEEN_EVENTS, {"events": [e.event_id for _, e, _, _ in primaries]}).mappings()}
    pairs = {(locked[e.contact_id]["id"], e.order_id) for _, e, _, _ in primaries
             if e.contact_id in locked and e.event_id not in seen}
    #: (account, order) that earned already -> that earn's event_id and payload.
    earned: dict[tuple[UUID, str], tuple[str, Any]] = {}
    if pairs:
        ordered = sorted(pairs)
        earned = {(a, o): (e, p) for a, o, e, p in conn.exec_driver_sql(sql.EARNED_ORDERS, {
            "accounts": [a for a, _ in ordered], "orders": [o for _, o in ordered]})}
    rules = active_rules(conn, "order.completed") if pairs else []

    running = {row["id"]: row["balance"] for row in locked.values()}
    revisions = {row["id"]: row["revision"] for row in locked.values()}
    credits: dict[UUID, int] = {}
    changes: dict[UUID, int] = {}
    entries: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    for i, event, fingerprint, payload in primaries:
        row = seen.get(event.event_id)
        if row is not None:
            try:
                results[i] = seen_outcome(row, event.event_id, fingerprint)
            except IdempotencyConflict as exc:
                results[i] = exc
            continue
        account = locked.get(event.contact_id)
        if account is None:
            results[i] = AccountNotFound(
                f"no loyalty account for contact_id {event.contact_id!r}")
            continue
        account_id = account["id"]
        outcome, points, entry, detail = "duplicate_order", 0, None, None
        first = earned.get((account_id, event.order_id))
        if first is not None:
            detail = order_change(first[0], first[1], event)
            if detail:
                outcome = "duplicate_order_changed"
        else:
            rule = select_rule(rules, "order.completed", event.currency)
            if rule is None:
                results[i] = NoActiveRule(
                    f"no active order.completed rule for currency {event.currency}")
                continue
            points = rule.points_for(event.total)
            outcome = "no_points"
            refused = above_ceiling(points, running[account_id]) if points else None
            if refused:
                results[i] = refused
                continue
            if points:
                outcome, entry = "earned", entry_id()
                earned[(account_id, event.order_id)] = (event.event_id, json.loads(payload))
                running[account_id] += points
                revisions[account_id] += 1
                credits[account_id] = credits.get(account_id, 0) + points
                changes[account_id] = changes.get(account_id, 0) + 1
                entries.append(earn_entry(entry, account_id, running[account_id],
                                          revisions[account_id], rule, points,
                                          event.event_id, "order.completed", event,
                                          f"Order {event.order_id}"))
        records.append({"event_id": event.event_id, "event_type": "order.completed",
                        "fingerprint": fingerprint, "contact_id": event.contact_id,
                        "account_id": account_id, "order_id": event.order_id,
                        "outcome": outcome, "points": points, "ledger_entry_id": entry,
                        "payload": payload,
                        "detail": json.dumps(detail) if detail else None})
        results[i] = EventOutcome(event_id=event.event_id, outcome=outcome, points=points,
                                  account_id=str(account_id),
                                  ledger_entry_id=str(entry) if entry else None,
                                  detail=detail)
    if credits:
        ids = sorted(credits)
        conn.exec_driver_sql(sql.CREDIT_ACCOUNTS, {
            "ids": ids, "points": [credits[a] for a in ids], "entries": [changes[a] for a in ids]})
    # Then the entries, in batch order: the ledger's statement trigger checks each
    # balance_after against the one before it, and the last against the account.
    if entries:
        conn.exec_driver_sql(sql.INSERT_ENTRIES, sql.columns(entries, sql.ENTRY_COLUMNS))
    if records:
        conn.exec_driver_sql(sql.INSERT_PROCESSED, sql.columns(records, sql.PROCESSED_COLUMNS))


def _record(conn: Connection, record: dict[str, Any], outcome: str, points: int = 0,
            entry: UUID | None = None, detail: dict[str, Any] | None = None) -> EventOutcome:
    conn.execute(
        processed_events.insert().values(
            **record, outcome=outcome, points=points, ledger_entry_id=entry, detail=detail
        )
    )
    return EventOutcome(
        event_id=record["event_id"],
        outcome=outcome,
        points=points,
        account_id=str(record["account_id"]),
        ledger_entry_id=str(entry) if entry else None,
        detail=detail,
    )


def _earn(conn: Connection, account: Mapping[Any, Any], rule: EarnRule, points: int,
          event_id: str, event_type: str, order: OrderCompletedEvent | None,
          description: str) -> UUID:
    # The account first: the ledger's statement trigger checks it against the entry.
    entry = entry_id()
    conn.execute(
        update(accounts)
        .where(accounts.c.id == account["id"])
        .values(
            balance=accounts.c.balance + points,
            earned=accounts.c.earned + points,
            revision=accounts.c.revision + 1,
            updated_at=func.now(),
            last_activity_at=func.now(),
        )
    )
    conn.execute(ledger_entries.insert().values(earn_entry(
        entry, account["id"], account["balance"] + points, account["revision"] + 1, rule,
        points, event_id, event_type, order, description)))
    return entry
