"""Earning: events turned into EARN entries, by one set-based implementation.

A single event is a batch of one. `apply_events` applies a batch
with the effect of applying its events in order: signups one by one, each in a
savepoint (which contact gets a contested member_id depends on the order), then
orders in rounds, their accounts locked in id order (so concurrent batches never
deadlock each other), then activities in stream order, then refunds
(`loyalty.ledger.reversing`), which may take back what the orders just earned.
Whatever earns, `EarnWrites` (`loyalty.ledger.earn_writes`) writes: one UPDATE for the
accounts, then one multi-row INSERT for the entries and one for the processed events, so
every entry carries its account revision and what it was computed from.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from loyalty.errors import AccountNotFound, IdempotencyConflict, LoyaltyError, NoActiveRule
from loyalty.ledger import statements as sql
from loyalty.ledger.accounts import lock_account
from loyalty.ledger.boundary import guarded, transactions
from loyalty.ledger.earn_rules import active_rules
from loyalty.ledger.earn_writes import EarnWrites
from loyalty.ledger.entries import (
    EventOutcome,
    above_ceiling,
    order_change,
    seen_outcome,
    settled_already,
)
from loyalty.ledger.program import settings as program_settings
from loyalty.ledger.reversing import refunds_work
from loyalty.rules import select_rule
from loyalty.tables import accounts, contacts, ledger_entries
from schemas.events import ActivityEvent, OrderCompletedEvent, OrderRefundedEvent, SignupEvent

Event = SignupEvent | OrderCompletedEvent | ActivityEvent | OrderRefundedEvent
Result = EventOutcome | LoyaltyError


def apply_one(engine: Engine, event: Event) -> EventOutcome:
    """One event is a batch of one: its error is raised instead of returned."""
    return outcome_of(apply_events(engine, [event])[0])


def outcome_of(result: Result) -> EventOutcome:
    """An event's outcome, or its error raised."""
    if isinstance(result, LoyaltyError):
        raise result
    return result


def apply_events(engine: Engine, events: Sequence[Event]) -> list[Result]:
    """Apply many events in one transaction, with the effect of applying them in order.

    An event that cannot be applied gets its error in its slot of the result and
    writes nothing; the others commit.
    """
    if not events:
        return []
    for transaction in transactions(engine):
        with transaction as conn:
            results = events_work(conn, events)
    return results


def events_work(conn: Connection, events: Sequence[Event]) -> list[Result]:
    """The events, in one transaction already open (a batch, or letters being replayed).

    Signups first, one by one in stream order (an order may follow its signup in the
    same batch); then orders in rounds, each round taking one occurrence of every
    event_id. A later occurrence of an event_id is a duplicate of an applied earlier
    one, or a conflict if its content differs; if the earlier one failed, it is tried
    afresh in the next round, as it would be one by one.
    """
    results: list[Result | None] = [None] * len(events)
    # Two batches of signups for the same contacts can deadlock; PostgreSQL aborts one
    # and the transaction boundary runs it again.
    for i, event in enumerate(events):
        if isinstance(event, SignupEvent):
            results[i] = guarded(conn, signup_work(event))
    kinds = {type(e) for e in events} - {SignupEvent}
    if len(kinds) > 1:
        # Orders, activities and refunds lock their accounts phase by phase; lock them all
        # at once first, in id order, so that two such batches cannot deadlock across phases.
        conn.exec_driver_sql(sql.LOCK_ACCOUNTS_BY_CONTACT, {"contacts": sorted(
            {e.contact_id for e in events if not isinstance(e, SignupEvent)})}).all()
    pending = [(i, e) for i, e in enumerate(events) if isinstance(e, OrderCompletedEvent)]
    by_index = dict(pending)
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
    activities = [(i, e) for i, e in enumerate(events) if isinstance(e, ActivityEvent)]
    if activities:
        _activities(conn, activities, results)
    refunds_work(conn, [(i, e) for i, e in enumerate(events) if isinstance(e, OrderRefundedEvent)],
                 results)
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def signup_work(event: SignupEvent) -> Callable[[Connection], EventOutcome]:
    """One signup: its contact and account, and the signup bonus if a rule gives one."""
    fingerprint, payload = event.fingerprint_and_json()

    def work(conn: Connection) -> EventOutcome:
        seen = _seen(conn, [event.event_id]).get(event.event_id)
        if seen:
            return seen_outcome(seen, event.event_id, fingerprint)
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
        # Again after the lock, which serialises concurrent deliveries of this signup.
        seen = _seen(conn, [event.event_id]).get(event.event_id)
        if seen:
            return seen_outcome(seen, event.event_id, fingerprint)
        writes = EarnWrites()
        already = conn.execute(
            select(ledger_entries.c.id).where(
                ledger_entries.c.account_id == account["id"],
                ledger_entries.c.type == "EARN",
                ledger_entries.c.event_type == "signup",
            )
        ).first()
        rule = None if already else select_rule(active_rules(conn, "signup"), "signup", None)
        outcome, points, entry = "already_signed_up" if already else "no_rule", 0, None
        # No rule: the contact and account are real even while the signup bonus is paused.
        if rule is not None:
            # An account may exist (and hold a tier) before its signup: its tier prices it.
            rule_at, tier_id = rule.tier_terms(
                _tiers_of(conn, [account["id"]]).get(account["id"]) if rule.tier_points else None)
            points = rule_at.points_for()
            refused = above_ceiling(points, account["balance"])
            if refused:
                raise refused
            outcome = "earned"
            entry = writes.earn(account["id"], account["balance"] + points,
                                account["revision"] + 1, rule, points, event.event_id,
                                "signup", None, rule.name, tier_id=tier_id)
        result = writes.record(event.event_id, "signup", fingerprint, event.contact_id,
                               account["id"], None, outcome, points, entry, payload, None)
        writes.write(conn)
        return result

    return work


def _orders_round(conn: Connection, orders: list[tuple[int, OrderCompletedEvent]],
                  results: list[Result | None]) -> None:
    """One occurrence of each event_id: locks, reads, then one statement per table."""
    primaries = [(i, event, *event.fingerprint_and_json()) for i, event in orders]
    contact_ids = sorted({e.contact_id for _, e, _, _ in primaries})
    locked = {row["contact_id"]: row for row in conn.exec_driver_sql(
        sql.LOCK_ACCOUNTS_BY_CONTACT, {"contacts": contact_ids}).mappings()}
    # Looked up after the locks, which serialise concurrent deliveries of an event.
    seen = _seen(conn, [e.event_id for _, e, _, _ in primaries])
    pairs = {(locked[e.contact_id]["id"], e.order_id) for _, e, _, _ in primaries
             if e.contact_id in locked and e.event_id not in seen}
    #: (account, order) that earned already -> that earn's event_id and payload.
    earned: dict[tuple[UUID, str], tuple[str, Any]] = {}
    if pairs:
        ordered = sorted(pairs)
        earned = {(a, o): (e, p) for a, o, e, p in conn.exec_driver_sql(sql.EARNED_ORDERS, {
            "accounts": [a for a, _ in ordered], "orders": [o for _, o in ordered]})}
    rules = active_rules(conn, "order.completed") if pairs else []
    pending_days = program_settings(conn).pending_days if pairs else 0
    # The account's tier at the moment of the earn prices a rule with per-tier points.
    tiers = _tiers_of(conn, sorted(a for a, _ in pairs)) \
        if any(r.tier_points for r in rules) else {}
    now = datetime.now(UTC)

    running = {row["id"]: row["balance"] for row in locked.values()}
    revisions = {row["id"]: row["revision"] for row in locked.values()}
    writes = EarnWrites()
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
            rule_at, tier_id = rule.tier_terms(tiers.get(account_id))
            points = rule_at.points_for(event.total)
            outcome = "no_points"
            refused = above_ceiling(points, running[account_id]) if points else None
            if refused:
                results[i] = refused
                continue
            until = event.occurred_at + timedelta(days=pending_days)
            if points and pending_days and until > now:
                # The points wait in a pending lot; `activate_points` earns them on time.
                outcome = "pending"
                earned[(account_id, event.order_id)] = (event.event_id, json.loads(payload))
                writes.pending(account_id, points, until, event, rule, tier_id)
            elif points:
                outcome = "earned"
                earned[(account_id, event.order_id)] = (event.event_id, json.loads(payload))
                running[account_id] += points
                revisions[account_id] += 1
                entry = writes.earn(account_id, running[account_id], revisions[account_id],
                                    rule, points, event.event_id, "order.completed", event,
                                    f"Order {event.order_id}", tier_id=tier_id)
        results[i] = writes.record(event.event_id, "order.completed", fingerprint,
                                   event.contact_id, account_id, event.order_id, outcome, points,
                                   entry, payload, detail)
    writes.write(conn)


def _activities(conn: Connection, activities: list[tuple[int, ActivityEvent]],
                results: list[Result | None]) -> None:
    """Activities in stream order: locks, reads, then one statement per table.

    With a reference, an activity earns once per account, activity and reference; a
    repeat is recorded as `duplicate_activity`.
    """
    events = [(i, e, *e.fingerprint_and_json()) for i, e in activities]
    locked = {row["contact_id"]: row for row in conn.exec_driver_sql(
        sql.LOCK_ACCOUNTS_BY_CONTACT,
        {"contacts": sorted({e.contact_id for _, e, _, _ in events})}).mappings()}
    seen = _seen(conn, sorted({e.event_id for _, e, _, _ in events}))
    triples = sorted({(locked[e.contact_id]["id"], e.activity, e.reference_id)
                      for _, e, _, _ in events
                      if e.contact_id in locked and e.reference_id is not None})
    earned: set[tuple[UUID, str, str]] = set()
    if triples:
        earned = {(a, act, ref) for a, act, ref in conn.exec_driver_sql(sql.EARNED_REFERENCES, {
            "accounts": [t[0] for t in triples], "activities": [t[1] for t in triples],
            "refs": [t[2] for t in triples]})}
    rules = {r.activity: r for r in active_rules(conn, "activity")}
    # The account's tier at the moment of the earn prices a rule with per-tier points.
    tiers = _tiers_of(conn, sorted(row["id"] for row in locked.values())) \
        if any(r.tier_points for r in rules.values()) else {}
    running = {row["id"]: row["balance"] for row in locked.values()}
    revisions = {row["id"]: row["revision"] for row in locked.values()}
    writes = EarnWrites()
    first: dict[str, tuple[int, str]] = {}
    for i, event, fingerprint, payload in events:
        account = settled_already(results, i, event, fingerprint, first, seen, locked)
        if account is None:
            continue
        account_id = account["id"]
        key = (account_id, event.activity, event.reference_id)
        outcome, points, entry = "duplicate_activity", 0, None
        if event.reference_id is None or key not in earned:
            rule = rules.get(event.activity)
            if rule is None:
                results[i] = NoActiveRule(f"no active activity rule for {event.activity!r}")
                continue
            rule_at, tier_id = rule.tier_terms(tiers.get(account_id))
            points = rule_at.points_for()
            refused = above_ceiling(points, running[account_id])
            if refused:
                results[i] = refused
                continue
            outcome = "earned"
            running[account_id] += points
            revisions[account_id] += 1
            if event.reference_id is not None:
                earned.add(key)  # type: ignore[arg-type]
            entry = writes.earn(account_id, running[account_id], revisions[account_id], rule,
                                points, event.event_id, "activity", None, rule.name,
                                activity=event.activity, reference_id=event.reference_id,
                                tier_id=tier_id)
        results[i] = writes.record(event.event_id, "activity", fingerprint, event.contact_id,
                                   account_id, None, outcome, points, entry, payload, None)
    writes.write(conn)


def _tiers_of(conn: Connection, account_ids: list[UUID]) -> dict[UUID, int]:
    """These accounts' tiers now (none while tiers are DISABLED): the tier prices an earn."""
    return {a: t for a, t in conn.exec_driver_sql(sql.TIERS_OF, {"ids": account_ids})}


def _seen(conn: Connection, event_ids: list[str]) -> dict[str, Mapping[Any, Any]]:
    """What earlier deliveries of these events did, by event_id."""
    return {row["event_id"]: row for row in conn.exec_driver_sql(
        sql.SEEN_EVENTS, {"events": event_ids}).mappings()}
