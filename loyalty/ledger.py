"""The one module that talks SQL to the ledger database.

Every public method is one unit of work in one PostgreSQL transaction: the
idempotency record, the ledger entry and the account's cached points commit
together or not at all. Driver errors leave this module as `loyalty.errors`
exceptions, so callers never import psycopg or SQLAlchemy to decide what to do.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy import (
    Connection,
    Engine,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)

from loyalty import views
from loyalty.adjustments import decide_adjustment
from loyalty.errors import (
    AccountNotFound,
    BalanceAboveMaximum,
    ContactConflict,
    DeadLetterNotFound,
    DeadLetterNotPending,
    IdempotencyConflict,
    InvalidPayload,
    InvalidRule,
    LoyaltyError,
    NoActiveRule,
    NotReplayable,
    PointsAboveMaximum,
    RuleError,
    RuleNotFound,
    TransientError,
)
from loyalty.replay import KEPT_UNREAD
from loyalty.rules import MAX_BALANCE, MAX_EARN_POINTS, EarnRule, select_rule, validate_rule
from loyalty.tables import (
    accounts,
    adjust_requests,
    contacts,
    dead_letters,
    earn_rules,
    ledger_entries,
    message_crashes,
    processed_events,
)
from schemas.events import AdjustPointsRequest, Contract, OrderCompletedEvent, SignupEvent

T = TypeVar("T")

#: Unique keys that two deliveries of one message can race for. Losing such a
#: race is not an error: the unit of work runs again and finds the winner's row.
_RACE_CONSTRAINTS = frozenset(
    {
        "pk_processed_events",
        "pk_adjust_requests",
        "pk_contacts",
        "uq_accounts_contact_id",
        "uq_ledger_entries_event_id",
        "uq_ledger_entries_idempotency_key",
        "uq_ledger_entries_one_order",
        "uq_ledger_entries_one_signup",
        "uq_dead_letters_message_id",
    }
)

#: deadlock_detected, serialization_failure
_RETRY_STATES = frozenset({"40P01", "40001"})

_ACCOUNT = select(accounts, contacts.c.member_id).join(
    contacts, contacts.c.contact_id == accounts.c.contact_id
)


class _Rollback(Exception):
    """Carries a dry run's outcome out of a transaction that must not commit."""

    def __init__(self, outcome: dict[str, Any]) -> None:
        super().__init__("dry run")
        self.outcome = outcome


class LedgerIntegrityError(LoyaltyError):
    """The database refused a write that the code believed valid: a bug, never retried."""

    reason = "integrity_violation"


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


def _constraint(exc: DBAPIError) -> str | None:
    diag = getattr(exc.orig, "diag", None)
    return getattr(diag, "constraint_name", None)


class Ledger:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- unit-of-work plumbing -------------------------------------------------

    def _run(self, work: Callable[[Connection], T]) -> T:
        for attempt in range(3):
            try:
                with self.engine.begin() as conn:
                    return work(conn)
            except IntegrityError as exc:
                name = _constraint(exc)
                if name == "uq_contacts_member_id":
                    raise _member_conflict(exc) from None
                if name in _RACE_CONSTRAINTS and attempt < 2:
                    continue
                raise LedgerIntegrityError(f"{name or 'constraint'}: {exc.orig}") from exc
            except (OperationalError, InterfaceError) as exc:
                # Two batches that touch the same accounts in different phases can
                # deadlock; PostgreSQL aborts one, and it simply runs again.
                if getattr(exc.orig, "sqlstate", None) in _RETRY_STATES and attempt < 2:
                    continue
                raise TransientError(f"database unavailable: {str(exc.orig).strip()}") from exc
            except DataError as exc:
                # Values PostgreSQL cannot hold (a NUL character, an out-of-range number).
                raise InvalidPayload(f"the database refused a value: {str(exc.orig).strip()}") \
                    from exc
            except DBAPIError as exc:
                if exc.connection_invalidated:
                    raise TransientError(f"connection lost: {str(exc.orig).strip()}") from exc
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    # -- events ----------------------------------------------------------------

    def apply_signup(self, event: SignupEvent) -> EventOutcome:
        return self._run(self._signup_work(event))

    def _signup_work(self, event: SignupEvent) -> Callable[[Connection], EventOutcome]:
        fingerprint, payload = event.fingerprint_and_json()

        def work(conn: Connection) -> EventOutcome:
            seen = self._seen_event(conn, event.event_id, fingerprint)
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
            account = self._lock_account(conn, contact_id=event.contact_id)
            assert account is not None
            seen = self._seen_event(conn, event.event_id, fingerprint)
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
                return self._record(conn, record, "already_signed_up")
            rule = select_rule(self._active_rules(conn, "signup"), "signup", None)
            if rule is None:
                # The contact and account are real even while the signup bonus is paused.
                return self._record(conn, record, "no_rule")
            refused = _above_ceiling(rule.points_for(), account["balance"])
            if refused:
                raise refused
            entry_id = self._earn(conn, account, rule, rule.points_for(), event.event_id,
                                  "signup", None, rule.name)
            return self._record(conn, record, "earned", rule.points_for(), entry_id)

        return work

    def apply_order(self, event: OrderCompletedEvent) -> EventOutcome:
        return self._run(self._order_work(event))

    def _order_work(self, event: OrderCompletedEvent) -> Callable[[Connection], EventOutcome]:
        fingerprint, payload = event.fingerprint_and_json()

        def work(conn: Connection) -> EventOutcome:
            # Looked up once, after the account lock that serialises deliveries of this event.
            account = self._lock_account(conn, contact_id=event.contact_id)
            seen = self._seen_event(conn, event.event_id, fingerprint)
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
                detail = _order_change(earned_before.event_id, earned_before.payload, event)
                return self._record(conn, record, "duplicate_order_changed" if detail
                                    else "duplicate_order", detail=detail)
            rule = select_rule(self._active_rules(conn, "order.completed"), "order.completed",
                               event.currency)
            if rule is None:
                raise NoActiveRule(f"no active order.completed rule for currency {event.currency}")
            points = rule.points_for(event.total)
            if points == 0:
                return self._record(conn, record, "no_points")
            refused = _above_ceiling(points, account["balance"])
            if refused:
                raise refused
            entry_id = self._earn(conn, account, rule, points, event.event_id,
                                  "order.completed", event, f"Order {event.order_id}")
            return self._record(conn, record, "earned", points, entry_id)

        return work

    def _seen_event(self, conn: Connection, event_id: str, fingerprint: str) -> EventOutcome | None:
        row = conn.execute(
            select(processed_events).where(processed_events.c.event_id == event_id)
        ).mappings().first()
        if row is None:
            return None
        return _seen_outcome(row, event_id, fingerprint)

    # -- batches ---------------------------------------------------------------

    def apply_events(self, events: Sequence[SignupEvent | OrderCompletedEvent]
                     ) -> list[EventOutcome | LoyaltyError]:
        """Apply many events in one transaction, with the effect of applying them in order.

        An event that cannot be applied gets its error in its slot of the result and
        writes nothing; the others commit. Orders are written set-based: their
        accounts are locked in id order (so concurrent batches never deadlock each
        other), then one multi-row INSERT per table and one UPDATE per account.
        """
        if not events:
            return []
        return self._run(lambda conn: self._events_work(conn, events))

    def _events_work(self, conn: Connection, events: Sequence[SignupEvent | OrderCompletedEvent]
                     ) -> list[EventOutcome | LoyaltyError]:
        results: list[EventOutcome | LoyaltyError | None] = [None] * len(events)
        # Signups first, in stream order (which one gets a contested member_id depends on
        # it): an order may follow its signup in the same batch. Two batches of signups
        # for the same contacts can deadlock; PostgreSQL aborts one and `_run` reruns it.
        for i, event in enumerate(events):
            if isinstance(event, SignupEvent):
                results[i] = self._guarded(conn, self._signup_work(event))
        orders = [(i, e) for i, e in enumerate(events) if isinstance(e, OrderCompletedEvent)]
        if orders:
            self._orders_work(conn, orders, results)
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    def _guarded(self, conn: Connection, work: Callable[[Connection], T]) -> T | LoyaltyError:
        """Run one event's work in a savepoint, so that its failure undoes only itself."""
        try:
            with conn.begin_nested():
                return work(conn)
        except LoyaltyError as exc:
            return exc
        except IntegrityError as exc:
            if _constraint(exc) == "uq_contacts_member_id":
                return _member_conflict(exc)
            raise
        except DataError as exc:
            return InvalidPayload(f"the database refused a value: {str(exc.orig).strip()}")

    def _orders_work(self, conn: Connection, orders: list[tuple[int, OrderCompletedEvent]],
                     results: list[EventOutcome | LoyaltyError | None]) -> None:
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
            self._orders_round(conn, round_items, results)
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

    def _orders_round(self, conn: Connection, orders: list[tuple[int, OrderCompletedEvent]],
                      results: list[EventOutcome | LoyaltyError | None]) -> None:
        primaries = [(i, event, *event.fingerprint_and_json()) for i, event in orders]
        contact_ids = sorted({e.contact_id for _, e, _, _ in primaries})
        locked = {row["contact_id"]: row for row in conn.exec_driver_sql(
            _LOCK_ORDER_ACCOUNTS, {"contacts": contact_ids}).mappings()}
        # Looked up after the locks, which serialise concurrent deliveries of an event.
        seen = {row["event_id"]: row for row in conn.exec_driver_sql(
            _SEEN_EVENTS, {"events": [e.event_id for _, e, _, _ in primaries]}).mappings()}
        pairs = {(locked[e.contact_id]["id"], e.order_id) for _, e, _, _ in primaries
                 if e.contact_id in locked and e.event_id not in seen}
        #: (account, order) that earned already -> that earn's event_id and payload.
        earned: dict[tuple[UUID, str], tuple[str, Any]] = {}
        if pairs:
            ordered = sorted(pairs)
            earned = {(a, o): (e, p) for a, o, e, p in conn.exec_driver_sql(_EARNED_ORDERS, {
                "accounts": [a for a, _ in ordered], "orders": [o for _, o in ordered]})}
        rules = self._active_rules(conn, "order.completed") if pairs else []

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
                    results[i] = _seen_outcome(row, event.event_id, fingerprint)
                except IdempotencyConflict as exc:
                    results[i] = exc
                continue
            account = locked.get(event.contact_id)
            if account is None:
                results[i] = AccountNotFound(
                    f"no loyalty account for contact_id {event.contact_id!r}")
                continue
            account_id = account["id"]
            outcome, points, entry_id, detail = "duplicate_order", 0, None, None
            first = earned.get((account_id, event.order_id))
            if first is not None:
                detail = _order_change(first[0], first[1], event)
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
                refused = _above_ceiling(points, running[account_id]) if points else None
                if refused:
                    results[i] = refused
                    continue
                if points:
                    outcome, entry_id = "earned", _entry_id()
                    earned[(account_id, event.order_id)] = (event.event_id, json.loads(payload))
                    running[account_id] += points
                    revisions[account_id] += 1
                    credits[account_id] = credits.get(account_id, 0) + points
                    changes[account_id] = changes.get(account_id, 0) + 1
                    entries.append(_earn_entry(entry_id, account_id, running[account_id],
                                               revisions[account_id], rule, points,
                                               event.event_id, "order.completed", event,
                                               f"Order {event.order_id}"))
            records.append({"event_id": event.event_id, "event_type": "order.completed",
                            "fingerprint": fingerprint, "contact_id": event.contact_id,
                            "account_id": account_id, "order_id": event.order_id,
                            "outcome": outcome, "points": points, "ledger_entry_id": entry_id,
                            "payload": payload,
                            "detail": json.dumps(detail) if detail else None})
            results[i] = EventOutcome(event_id=event.event_id, outcome=outcome, points=points,
                                      account_id=str(account_id),
                                      ledger_entry_id=str(entry_id) if entry_id else None,
                                      detail=detail)
        if credits:
            ids = sorted(credits)
            conn.exec_driver_sql(_CREDIT_ACCOUNTS, {"ids": ids, "points": [credits[a] for a in ids],
                                            "entries": [changes[a] for a in ids]})
        # Then the entries, in batch order: the ledger's statement trigger checks each
        # balance_after against the one before it, and the last against the account.
        if entries:
            conn.exec_driver_sql(_INSERT_ENTRIES, _columns(entries, _ENTRY_COLUMNS))
        if records:
            conn.exec_driver_sql(_INSERT_PROCESSED, _columns(records, _PROCESSED_COLUMNS))

    def _record(self, conn: Connection, record: dict[str, Any], outcome: str, points: int = 0,
                entry_id: UUID | None = None, detail: dict[str, Any] | None = None
                ) -> EventOutcome:
        conn.execute(
            processed_events.insert().values(
                **record, outcome=outcome, points=points, ledger_entry_id=entry_id, detail=detail
            )
        )
        return EventOutcome(
            event_id=record["event_id"],
            outcome=outcome,
            points=points,
            account_id=str(record["account_id"]),
            ledger_entry_id=str(entry_id) if entry_id else None,
            detail=detail,
        )

    def _earn(self, conn: Connection, account: Mapping[Any, Any], rule: EarnRule, points: int,
              event_id: str, event_type: str, order: OrderCompletedEvent | None,
              description: str) -> UUID:
        # The account first: the ledger's statement trigger checks it against the entry.
        entry_id = _entry_id()
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
        conn.execute(ledger_entries.insert().values(_earn_entry(
            entry_id, account["id"], account["balance"] + points, account["revision"] + 1, rule,
            points, event_id, event_type, order, description)))
        return entry_id

    # -- manual adjustments ----------------------------------------------------

    def adjust_points(self, request: AdjustPointsRequest) -> dict[str, Any]:
        """Apply or reject one staff adjustment; a repeated request_id returns its first result."""
        return self._run(self._adjust_work(request))

    def _adjust_work(self, request: AdjustPointsRequest) -> Callable[[Connection], dict[str, Any]]:
        fingerprint = request.fingerprint()

        def previous(conn: Connection) -> dict[str, Any] | None:
            row = conn.execute(
                select(adjust_requests.c.fingerprint, adjust_requests.c.result).where(
                    adjust_requests.c.request_id == request.request_id
                )
            ).first()
            if row is None:
                return None
            if row.fingerprint != fingerprint:
                raise IdempotencyConflict(
                    f"request_id {request.request_id!r} was already used with a different payload"
                )
            return dict(row.result)

        def work(conn: Connection) -> dict[str, Any]:
            # Looked up once, after the account lock that serialises repeats of this request.
            account = self._lock_account(
                conn,
                account_id=UUID(request.account_id) if request.account_id else None,
                contact_id=request.contact_id,
            )
            first = previous(conn)
            if first is not None:
                return first
            entry_id: UUID | None = None
            if account is None:
                result: dict[str, Any] = {"status": "rejected", "reason": "account_not_found",
                                          "account": None}
            else:
                decision = decide_adjustment(
                    balance=account["balance"],
                    revision=account["revision"],
                    amount=request.amount,
                    new_balance=request.balance,
                    expected_revision=request.revision,
                )
                if decision.applied:
                    entry_id, account = self._adjust(conn, account, decision.delta,
                                                     decision.balance_after, request)
                    result = {"status": "applied", "transaction_id": str(entry_id),
                              "account": views.account_json(account)}
                else:
                    result = {"status": "rejected", "reason": decision.reason,
                              "account": views.account_json(account)}
            conn.execute(
                adjust_requests.insert().values(
                    request_id=request.request_id,
                    fingerprint=fingerprint,
                    status=result["status"],
                    reason=result.get("reason"),
                    ledger_entry_id=entry_id,
                    result=result,
                )
            )
            return result

        return work

    def _work_for(self, message: Contract) -> Callable[[Connection], Any]:
        if isinstance(message, SignupEvent):
            return self._signup_work(message)
        if isinstance(message, OrderCompletedEvent):
            return self._order_work(message)
        if isinstance(message, AdjustPointsRequest):
            return self._adjust_work(message)
        raise NotReplayable(f"{type(message).__name__} is not a ledger message")

    def _adjust(self, conn: Connection, account: Mapping[Any, Any], delta: int, balance_after: int,
                request: AdjustPointsRequest) -> tuple[UUID, dict[str, Any]]:
        """Write the ADJUST entry; returns its id and the account as it now stands."""
        # The account first: the ledger's statement trigger checks it against the entry.
        updated = conn.execute(
            update(accounts)
            .where(accounts.c.id == account["id"])
            .values(
                balance=balance_after,
                adjusted=accounts.c.adjusted + delta,
                revision=accounts.c.revision + 1,
                updated_at=func.now(),
                last_activity_at=func.now(),
            )
            .returning(accounts)
        ).mappings().one()
        entry_id: UUID = conn.execute(
            ledger_entries.insert()
            .values(
                account_id=account["id"],
                type="ADJUST",
                amount=delta,
                balance_after=balance_after,
                balance_before=account["balance"],
                account_revision=account["revision"] + 1,
                description=request.description,
                idempotency_key=f"adjust:{request.request_id}",
                actor=request.actor,
            )
            .returning(ledger_entries.c.id)
        ).scalar_one()
        return entry_id, {**updated, "member_id": account["member_id"]}

    # -- accounts and transactions (reads) ---------------------------------------

    def _lock_account(self, conn: Connection, *, account_id: UUID | None = None,
                      contact_id: str | None = None) -> Mapping[Any, Any] | None:
        query = _ACCOUNT.with_for_update(of=accounts)
        if account_id is not None:
            query = query.where(accounts.c.id == account_id)
        else:
            query = query.where(accounts.c.contact_id == contact_id)
        return conn.execute(query).mappings().first()

    def get_account(self, *, account_id: str | None = None, contact_id: str | None = None,
                    member_id: str | None = None) -> dict[str, Any]:
        query = _ACCOUNT
        if account_id is not None:
            query = query.where(accounts.c.id == _uuid(account_id, "account id"))
        elif contact_id is not None:
            query = query.where(accounts.c.contact_id == contact_id)
        else:
            query = query.where(contacts.c.member_id == member_id)
        row = self._read(lambda conn: conn.execute(query).mappings().first())
        if row is None:
            raise AccountNotFound("no such loyalty account")
        return views.account_json(row)

    def list_accounts(self, limit: int, cursor: str | None = None) -> dict[str, Any]:
        query = _ACCOUNT.order_by(accounts.c.id)
        if cursor:
            try:
                after = UUID(views.decode_cursor(cursor))
            except ValueError:
                raise views.InvalidCursor(f"invalid cursor {cursor!r}: pass a next_cursor printed"
                                          " by a list") from None
            query = query.where(accounts.c.id > after)
        return self._page(query, limit, "id", views.account_json)

    def _page(self, query: Any, limit: int, key: str,
              shape: Callable[[Mapping[Any, Any]], dict[str, Any]]) -> dict[str, Any]:
        """One page plus the cursor of the next: fetch one row more than asked to know."""
        rows = self._read(lambda conn: conn.execute(query.limit(limit + 1)).mappings().all())
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = views.encode_cursor(str(rows[-1][key])) if more else None
        return views.page([shape(r) for r in rows], next_cursor)

    def list_transactions(self, *, account_id: str | None = None, contact_id: str | None = None,
                          type_: str | None = None, limit: int = 50,
                          cursor: str | None = None) -> dict[str, Any]:
        account = self.get_account(account_id=account_id, contact_id=contact_id)
        query = (
            select(ledger_entries)
            .where(ledger_entries.c.account_id == UUID(account["id"]))
            .order_by(ledger_entries.c.seq.desc())
        )
        if type_:
            query = query.where(ledger_entries.c.type == type_)
        if cursor:
            query = query.where(ledger_entries.c.seq < views.decode_int_cursor(cursor))
        return self._page(query, limit, "seq", views.entry_json)

    def list_events(self, *, contact_id: str | None = None, outcome: str | None = None,
                    limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        """Processed events, newest first, by contact or by outcome."""
        query = select(processed_events).order_by(processed_events.c.processed_at.desc(),
                                                  processed_events.c.event_id.desc())
        if contact_id is not None:
            query = query.where(processed_events.c.contact_id == contact_id)
        if outcome is not None:
            query = query.where(processed_events.c.outcome == outcome)
        if cursor:
            try:
                at, event_id = json.loads(views.decode_cursor(cursor))
                after = (datetime.fromisoformat(at), str(event_id))
            except (ValueError, TypeError):
                raise views.InvalidCursor(f"invalid cursor {cursor!r}: pass a next_cursor printed"
                                          " by a list") from None
            query = query.where(func.row(processed_events.c.processed_at,
                                         processed_events.c.event_id) < func.row(*after))
        rows = self._read(lambda conn: conn.execute(query.limit(limit + 1)).mappings().all())
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = views.encode_cursor(json.dumps(
            [rows[-1]["processed_at"].isoformat(), rows[-1]["event_id"]])) if more else None
        return views.page([views.event_json(r) for r in rows], next_cursor)

    def totals(self) -> dict[str, Any]:
        query = select(
            func.count(),
            *(func.coalesce(func.sum(accounts.c[name]), 0) for name in _POINTS),
        )
        row = self._read(lambda conn: conn.execute(query).one())
        return {"points": {name: int(v) for name, v in zip(_POINTS, row[1:], strict=True)},
                "accounts": row[0]}

    def _read(self, work: Callable[[Connection], T]) -> T:
        try:
            with self.engine.connect() as conn:
                return work(conn)
        except (OperationalError, InterfaceError) as exc:
            raise TransientError(f"database unavailable: {str(exc.orig).strip()}") from exc

    # -- earn rules --------------------------------------------------------------

    def _active_rules(self, conn: Connection, trigger: str) -> list[EarnRule]:
        rows = conn.execute(
            select(earn_rules).where(earn_rules.c.trigger == trigger,
                                     earn_rules.c.status == "ACTIVE")
        ).mappings().all()
        return [_rule(r) for r in rows]

    def list_rules(self) -> dict[str, Any]:
        rows = self._read(
            lambda conn: conn.execute(select(earn_rules).order_by(earn_rules.c.id)).mappings().all()
        )
        return views.page([views.rule_json(r) for r in rows], None)

    def create_rule(self, *, name: str, trigger: str, kind: str, points: int,
                    money_amount: Decimal | None, currency: str | None,
                    status: str = "ACTIVE") -> dict[str, Any]:
        validate_rule(trigger=trigger, kind=kind, points=points, money_amount=money_amount,
                      currency=currency, status=status)
        _check_name(name)
        values = {"name": name, "trigger": trigger, "kind": kind, "points": points,
                  "money_amount": money_amount, "currency": currency, "status": status}
        return self._write_rule(
            lambda conn: conn.execute(earn_rules.insert().values(**values).returning(earn_rules))
        )

    def update_rule(self, rule_id: int, *, expected_revision: int | None = None,
                    name: str | None = None, kind: str | None = None, points: int | None = None,
                    money_amount: Decimal | None = None, currency: str | None = None,
                    any_currency: bool = False, status: str | None = None) -> dict[str, Any]:
        """Change a rule; its revision goes up by one so later EARNs record the new terms."""
        def work(conn: Connection) -> Mapping[Any, Any]:
            current = conn.execute(
                select(earn_rules).where(earn_rules.c.id == rule_id).with_for_update()
            ).mappings().first()
            if current is None:
                raise RuleNotFound(f"no earn rule with id {rule_id}")
            if expected_revision is not None and expected_revision != current["revision"]:
                raise RuleError(
                    f"rule {rule_id} is at revision {current['revision']}, not {expected_revision}"
                )
            given = {"name": name, "kind": kind, "points": points, "money_amount": money_amount,
                     "currency": currency, "status": status}
            merged = {**dict(current), **{k: v for k, v in given.items() if v is not None}}
            if any_currency:
                merged["currency"] = None
            if merged["kind"] == "fixed":
                merged["money_amount"] = None
            validate_rule(trigger=merged["trigger"], kind=merged["kind"], points=merged["points"],
                          money_amount=merged["money_amount"], currency=merged["currency"],
                          status=merged["status"])
            _check_name(merged["name"])
            if all(merged[f] == current[f] for f in given):
                return current  # nothing changes, so the revision does not move either
            return conn.execute(
                update(earn_rules)
                .where(earn_rules.c.id == rule_id)
                .values(**{f: merged[f] for f in given}, revision=earn_rules.c.revision + 1,
                        updated_at=func.now())
                .returning(earn_rules)
            ).mappings().one()

        try:
            row = self._run(work)
        except LedgerIntegrityError as exc:
            raise _rule_conflict(exc) from None
        return views.rule_json(row)

    def _write_rule(self, statement: Callable[[Connection], Any]) -> dict[str, Any]:
        try:
            row = self._run(lambda conn: statement(conn).mappings().one())
        except LedgerIntegrityError as exc:
            raise _rule_conflict(exc) from None
        return views.rule_json(row)

    # -- dead letters --------------------------------------------------------------

    def add_dead_letter(self, *, task_name: str | None, message_id: str | None, payload: str,
                        headers: Mapping[Any, Any], reason: str, error_detail: str) -> int:
        """Keep a message that cannot be applied; a re-delivery of it counts one more attempt."""
        ins = pg_insert(dead_letters).values(
            task_name=_storable(task_name),
            message_id=_storable(message_id),
            payload=_storable(payload),
            headers=_storable_json(json.loads(json.dumps(headers, default=str))),
            reason=reason,
            error_detail=_storable(error_detail[:4000]),
        )
        statement = ins.on_conflict_do_update(
            index_elements=[dead_letters.c.message_id],
            index_where=dead_letters.c.message_id.isnot(None),
            set_={
                "attempts": dead_letters.c.attempts + 1,
                "last_failed_at": func.now(),
                "reason": ins.excluded.reason,
                "error_detail": ins.excluded.error_detail,
                "status": "pending",
            },
        ).returning(dead_letters.c.id)
        letter_id: int = self._run(lambda conn: conn.execute(statement).scalar_one())
        return letter_id

    def dead_letter(self, letter_id: int) -> dict[str, Any]:
        row = self._read(lambda conn: conn.execute(
            select(dead_letters).where(dead_letters.c.id == letter_id)).mappings().first())
        if row is None:
            raise DeadLetterNotFound(f"no dead letter with id {letter_id}")
        return views.dead_letter_json(row)

    def dead_letter_stats(self) -> dict[str, Any]:
        query = (select(dead_letters.c.reason, dead_letters.c.status, func.count())
                 .group_by(dead_letters.c.reason, dead_letters.c.status)
                 .order_by(dead_letters.c.reason, dead_letters.c.status))
        rows = self._read(lambda conn: conn.execute(query).all())
        by_reason: dict[str, dict[str, int]] = {}
        by_status = dict.fromkeys(("pending", "replayed", "discarded"), 0)
        for reason, status, count in rows:
            by_reason.setdefault(reason, dict.fromkeys(by_status, 0))[status] = count
            by_status[status] += count
        return {"by_reason": by_reason, "by_status": by_status, "total": sum(by_status.values())}

    def pending_dead_letter_ids(self, *, ids: list[int] | None = None, reason: str | None = None,
                                since: datetime | None = None,
                                limit: int | None = 100_000) -> list[int]:
        """The pending letters a replay would take, oldest first; all of them without a limit."""
        query = (select(dead_letters.c.id).where(dead_letters.c.status == "pending")
                 .order_by(dead_letters.c.id).limit(limit))
        if ids is None:
            # By reason, time or all: never the letters the worker refused to read.
            query = query.where(dead_letters.c.reason.not_in(sorted(KEPT_UNREAD)))
        if ids is not None:
            query = query.where(dead_letters.c.id.in_(ids))
        if reason is not None:
            query = query.where(dead_letters.c.reason == reason)
        if since is not None:
            query = query.where(dead_letters.c.first_failed_at >= since)
        return list(self._read(lambda conn: conn.execute(query).scalars().all()))

    def replay_dead_letter(self, letter_id: int, decode: Callable[[Mapping[Any, Any]], Contract],
                           *, dry_run: bool = False, actor: str | None = None) -> dict[str, Any]:
        """One letter on its own: for a chunk the database refused as a whole.

        If even the letter alone is refused, it stays pending with one more attempt
        and the reason, recorded in a transaction of its own.
        """
        try:
            return self.replay_dead_letters([letter_id], decode, dry_run=dry_run, actor=actor)[0]
        except (DeadLetterNotFound, TransientError):
            raise
        except LoyaltyError as exc:
            report = {"id": letter_id, "task_name": self.dead_letter(letter_id)["task_name"],
                      "result": "would_fail" if dry_run else "failed",
                      "reason": exc.reason, "detail": str(exc)}
            if not dry_run:
                again = (update(dead_letters)
                         .where(dead_letters.c.id == letter_id, dead_letters.c.status == "pending")
                         .values(attempts=dead_letters.c.attempts + 1, last_failed_at=func.now(),
                                 replay_outcome={**report, "actor": actor}))
                self._run(lambda conn: conn.execute(again))
            return report

    def replay_dead_letters(self, letter_ids: Sequence[int],
                            decode: Callable[[Mapping[Any, Any]], Contract], *,
                            dry_run: bool = False, actor: str | None = None
                            ) -> list[dict[str, Any]]:
        """Run pending letters through their original tasks' work, in one transaction.

        A letter's ledger write and its change to `replayed` commit together, so a
        letter is never marked replayed without its effect, nor applied twice by two
        operators replaying at once. Events are applied as one batch; a letter that
        fails goes back to pending with one more attempt. A dry run rolls it all back.
        """
        ids = list(dict.fromkeys(letter_ids))

        def work(conn: Connection) -> list[dict[str, Any]]:
            rows = {row["id"]: row for row in conn.exec_driver_sql(
                _LOCK_LETTERS, {"ids": ids}).mappings()}
            for letter_id in ids:
                if letter_id not in rows:
                    raise DeadLetterNotFound(f"no dead letter with id {letter_id}")
            reports: dict[int, dict[str, Any]] = {}
            outcomes: dict[int, Any] = {}
            batch: list[tuple[int, SignupEvent | OrderCompletedEvent]] = []
            for letter_id in ids:
                letter = rows[letter_id]
                reports[letter_id] = {"id": letter_id, "task_name": letter["task_name"]}
                if letter["status"] != "pending":
                    reports[letter_id].update(result="skipped",
                                              reason=f"letter is {letter['status']}")
                    continue
                if letter["reason"] in KEPT_UNREAD:
                    reports[letter_id].update(
                        result="skipped", reason=f"letters kept as {letter['reason']} are "
                        "never replayed; discard them")
                    continue
                try:
                    message = decode(letter)
                except LoyaltyError as exc:
                    outcomes[letter_id] = exc
                    continue
                if isinstance(message, SignupEvent | OrderCompletedEvent):
                    batch.append((letter_id, message))
                else:
                    outcomes[letter_id] = self._guarded(conn, self._work_for(message))
            results = self._events_work(conn, [m for _, m in batch]) if batch else []
            outcomes.update({letter_id: r for (letter_id, _), r in zip(batch, results, strict=True)})
            done, failed = [], []
            for letter_id in ids:
                if letter_id not in outcomes:
                    continue
                report, outcome = reports[letter_id], outcomes[letter_id]
                if isinstance(outcome, LoyaltyError):
                    report.update(result="would_fail" if dry_run else "failed",
                                  reason=outcome.reason, detail=str(outcome))
                    failed.append({"lid": letter_id, "reason": outcome.reason,
                                   "detail": str(outcome)[:4000],
                                   "outcome": {**report, "actor": actor}})
                else:
                    effect = outcome.as_dict() if isinstance(outcome, EventOutcome) else outcome
                    report.update(result="would_replay" if dry_run else "replayed", effect=effect)
                    done.append({"lid": letter_id, "outcome": {**report, "actor": actor}})
            if dry_run:
                raise _Rollback({"items": [reports[i] for i in ids]})
            if done:
                conn.exec_driver_sql(_LETTERS_REPLAYED, {
                    "ids": [d["lid"] for d in done],
                    "outcomes": [json.dumps(d["outcome"]) for d in done]})
            if failed:
                conn.exec_driver_sql(_LETTERS_FAILED_AGAIN, {
                    "ids": [f["lid"] for f in failed],
                    "outcomes": [json.dumps(f["outcome"]) for f in failed]})
            return [reports[i] for i in ids]

        try:
            return self._run(work)
        except _Rollback as rolled_back:
            items: list[dict[str, Any]] = rolled_back.outcome["items"]
            return items

    def discard_dead_letter(self, letter_id: int, *, why: str, actor: str) -> dict[str, Any]:
        """Keep the letter, but mark it as deliberately not to be replayed, and by whom."""
        if not why.strip() or not actor.strip():
            raise InvalidPayload("a discard needs a reason (--why) and an actor (--actor)")

        def work(conn: Connection) -> Mapping[Any, Any]:
            row = conn.execute(
                update(dead_letters)
                .where(dead_letters.c.id == letter_id, dead_letters.c.status == "pending")
                .values(status="discarded", discarded_at=func.now(), discarded_by=actor,
                        discard_reason=why)
                .returning(dead_letters)
            ).mappings().first()
            if row is None:
                current = conn.execute(select(dead_letters.c.status).where(
                    dead_letters.c.id == letter_id)).scalar()
                if current is None:
                    raise DeadLetterNotFound(f"no dead letter with id {letter_id}")
                raise DeadLetterNotPending(f"dead letter {letter_id} is {current}, not pending")
            return row

        return views.dead_letter_json(self._run(work))

    def record_crash(self, message_id: str, task_name: str | None, error: str) -> int:
        """Count one more time this message took its worker process down; returns the count."""
        ins = pg_insert(message_crashes).values(message_id=message_id, task_name=task_name,
                                                crashes=1, last_error=error[:2000])
        statement = ins.on_conflict_do_update(
            index_elements=[message_crashes.c.message_id],
            set_={"crashes": message_crashes.c.crashes + 1, "last_error": ins.excluded.last_error,
                  "last_crashed_at": func.now()},
        ).returning(message_crashes.c.crashes)
        crashes: int = self._run(lambda conn: conn.execute(statement).scalar_one())
        return crashes

    def record_crashes(self, messages: Mapping[str, str | None], error: str) -> dict[str, int]:
        """`record_crash` for every message of a batch that took its worker process down."""
        if not messages:
            return {}
        ins = pg_insert(message_crashes).values([
            {"message_id": m, "task_name": t, "crashes": 1, "last_error": error[:2000]}
            for m, t in sorted(messages.items())])
        statement = ins.on_conflict_do_update(
            index_elements=[message_crashes.c.message_id],
            set_={"crashes": message_crashes.c.crashes + 1, "last_error": ins.excluded.last_error,
                  "last_crashed_at": func.now()},
        ).returning(message_crashes.c.message_id, message_crashes.c.crashes)
        return dict(self._run(lambda conn: conn.execute(statement).tuples().all()))

    def list_dead_letters(self, *, reason: str | None = None, status: str | None = None,
                          since: datetime | None = None, limit: int = 50,
                          cursor: str | None = None) -> dict[str, Any]:
        query = select(dead_letters).order_by(dead_letters.c.id)
        if reason:
            query = query.where(dead_letters.c.reason == reason)
        if status:
            query = query.where(dead_letters.c.status == status)
        if since:
            query = query.where(dead_letters.c.last_failed_at >= since)
        if cursor:
            query = query.where(dead_letters.c.id > views.decode_int_cursor(cursor))
        return self._page(query, limit, "id", views.dead_letter_json)

    # -- verification ----------------------------------------------------------------

    def verify(self) -> dict[str, Any]:
        """Re-check every ledger invariant across the whole database, independently of triggers."""
        def work(conn: Connection) -> dict[str, Any]:
            conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
            violations = []
            for check, sql in _VERIFY_CHECKS.items():
                for row in conn.execute(text(sql)).mappings():
                    violations.append({"check": check, **{k: _plain(v) for k, v in row.items()}})
            counts = conn.execute(text(
                "SELECT (SELECT count(*) FROM accounts) AS accounts,"
                " (SELECT count(*) FROM ledger_entries) AS entries,"
                # Order EARNs written before their totals were recorded (migration 0007)
                # cannot be computed again; they are counted, not reported.
                " (SELECT count(*) FROM ledger_entries WHERE type = 'EARN'"
                "  AND event_type = 'order.completed' AND order_total IS NULL)"
                " AS earns_not_recomputable"
            )).mappings().one()
            return {"ok": not violations, "checked": dict(counts), "violations": violations}

        return self._run(work)


_POINTS = ("balance", "earned", "adjusted", "redeemed", "expired")

_VERIFY_CHECKS = {
    "balance_not_negative": "SELECT id AS account_id, balance FROM accounts WHERE balance < 0",
    "balance_adds_up": """
        SELECT id AS account_id, balance, earned, adjusted, redeemed, expired FROM accounts
        WHERE balance <> earned + adjusted - redeemed - expired""",
    "balance_equals_ledger": """
        SELECT a.id AS account_id, a.balance, COALESCE(s.total, 0) AS ledger_sum
        FROM accounts a LEFT JOIN (
            SELECT account_id, sum(amount) AS total FROM ledger_entries GROUP BY account_id
        ) s ON s.account_id = a.id
        WHERE a.balance <> COALESCE(s.total, 0)""",
    "totals_equal_ledger": """
        SELECT a.id AS account_id, a.earned, a.adjusted, a.redeemed, a.expired,
               COALESCE(s.earned, 0) AS ledger_earned, COALESCE(s.adjusted, 0) AS ledger_adjusted,
               COALESCE(s.redeemed, 0) AS ledger_redeemed, COALESCE(s.expired, 0) AS ledger_expired
        FROM accounts a LEFT JOIN (
            SELECT account_id,
                   sum(amount) FILTER (WHERE type = 'EARN') AS earned,
                   sum(amount) FILTER (WHERE type = 'ADJUST') AS adjusted,
                   -sum(amount) FILTER (WHERE type IN ('REDEEM', 'REFUND')) AS redeemed,
                   -sum(amount) FILTER (WHERE type = 'EXPIRE') AS expired
            FROM ledger_entries GROUP BY account_id
        ) s ON s.account_id = a.id
        WHERE (a.earned, a.adjusted, a.redeemed, a.expired) IS DISTINCT FROM
              (COALESCE(s.earned, 0), COALESCE(s.adjusted, 0),
               COALESCE(s.redeemed, 0), COALESCE(s.expired, 0))""",
    "balance_after_chain": """
        SELECT account_id, id AS entry_id, expected, balance_after FROM (
            SELECT account_id, id, balance_after,
                   COALESCE(lag(balance_after) OVER w, 0) + amount AS expected
            FROM ledger_entries WINDOW w AS (PARTITION BY account_id ORDER BY seq)
        ) chained WHERE balance_after <> expected""",
    "revision_counts_changes": """
        SELECT a.id AS account_id, a.revision, 1 + COALESCE(n.entries, 0) AS expected
        FROM accounts a LEFT JOIN (
            SELECT account_id, count(*) AS entries FROM ledger_entries GROUP BY account_id
        ) n ON n.account_id = a.id
        WHERE a.revision <> 1 + COALESCE(n.entries, 0)""",
    "revision_chain": """
        SELECT account_id, id AS entry_id, seq, account_revision, expected FROM (
            SELECT account_id, id, seq, account_revision,
                   1 + row_number() OVER (PARTITION BY account_id ORDER BY seq) AS expected
            FROM ledger_entries
        ) chained WHERE account_revision <> expected""",
    # Two independent orders of an account's entries, by seq and by revision, must agree;
    # and every seq must be one the sequence issued.
    "seq_order": """
        SELECT account_id, id AS entry_id, seq, previous_seq FROM (
            SELECT account_id, id, seq,
                   lag(seq) OVER (PARTITION BY account_id ORDER BY account_revision) AS previous_seq
            FROM ledger_entries
        ) ordered WHERE seq <= previous_seq""",
    "seq_issued": """
        SELECT account_id, id AS entry_id, seq FROM ledger_entries
        WHERE seq <= 0 OR seq > COALESCE(
            pg_sequence_last_value('public.ledger_entries_seq_seq'::regclass), 0)""",
    # Each EARN computed again from the rule revision it names and what it was computed
    # from: a rewrite that keeps every balance consistent still shows here.
    "earn_follows_rule": """
        SELECT e.account_id, e.id AS entry_id, e.event_id, e.amount, x.expected
        FROM ledger_entries e
        JOIN earn_rule_revisions r ON r.rule_id = e.rule_id AND r.revision = e.rule_revision
        CROSS JOIN LATERAL (SELECT CASE
            WHEN r.trigger <> e.event_type THEN NULL
            WHEN r.kind = 'fixed' THEN r.points
            WHEN e.order_total IS NULL THEN e.amount
            WHEN r.currency IS NOT NULL AND r.currency <> e.currency THEN NULL
            ELSE div(e.order_total * r.points, r.money_amount) END AS expected) x
        WHERE e.type = 'EARN' AND e.amount IS DISTINCT FROM x.expected""",
    "earn_has_rule_revision": """
        SELECT e.account_id, e.id AS entry_id, e.rule_id, e.rule_revision FROM ledger_entries e
        LEFT JOIN earn_rule_revisions r ON r.rule_id = e.rule_id AND r.revision = e.rule_revision
        WHERE e.type = 'EARN' AND r.rule_id IS NULL
          AND e.rule_revision >= (SELECT min(h.revision) FROM earn_rule_revisions h
                                  WHERE h.rule_id = e.rule_id)""",
    "order_earns_once": """
        SELECT account_id, order_id, count(*) AS earns FROM ledger_entries
        WHERE type = 'EARN' AND order_id IS NOT NULL
        GROUP BY account_id, order_id HAVING count(*) > 1""",
    "signup_earns_once": """
        SELECT account_id, count(*) AS earns FROM ledger_entries
        WHERE type = 'EARN' AND event_type = 'signup'
        GROUP BY account_id HAVING count(*) > 1""",
    "processed_event_matches_entry": """
        SELECT p.event_id, p.points, e.amount FROM processed_events p
        LEFT JOIN ledger_entries e ON e.id = p.ledger_entry_id
        WHERE p.outcome = 'earned' AND (e.id IS NULL OR e.amount <> p.points
              OR e.event_id IS DISTINCT FROM p.event_id OR e.account_id <> p.account_id)""",
    "entry_has_processed_event": """
        SELECT e.id AS entry_id, e.event_id FROM ledger_entries e
        LEFT JOIN processed_events p ON p.ledger_entry_id = e.id
        WHERE e.type = 'EARN' AND p.event_id IS NULL""",
    "account_has_contact": """
        SELECT a.id AS account_id, a.contact_id FROM accounts a
        LEFT JOIN contacts c ON c.contact_id = a.contact_id WHERE c.contact_id IS NULL""",
}


def _above_ceiling(points: int, balance: int) -> LoyaltyError | None:
    """Why an earn of `points` on `balance` must not happen: one ceiling for every way in."""
    if points > MAX_EARN_POINTS:
        return PointsAboveMaximum(
            f"the rule gives {points} points; one event earns at most {MAX_EARN_POINTS}")
    if balance + points > MAX_BALANCE:
        return BalanceAboveMaximum(
            f"{points} points would take the balance from {balance} to {balance + points},"
            f" above the maximum of {MAX_BALANCE}")
    return None


def _order_change(first_event_id: str, first: Mapping[str, Any] | None,
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


def _member_conflict(exc: DBAPIError) -> ContactConflict:
    """Which member_id: PostgreSQL's detail reads `Key (member_id)=(m-1) already exists.`"""
    detail = getattr(getattr(exc.orig, "diag", None), "message_detail", None) or ""
    found = re.search(r"=\((.*)\) already exists", detail, re.S)
    which = f"member_id {found.group(1)!r}" if found else "member_id"
    return ContactConflict(f"{which} is already linked to another contact")


def _entry_id() -> UUID:
    """A UUIDv7 (RFC 9562): a millisecond timestamp, then random bits.

    Entry ids that grow with time land at the right edge of the primary key's B-tree,
    so a batch dirties a few index pages instead of one random page per entry.
    """
    unix_ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = ((unix_ms & (2**48 - 1)) << 80) | (0x7 << 76) | (((rand >> 62) & 0xFFF) << 64) \
        | (0b10 << 62) | (rand & (2**62 - 1))
    return UUID(int=value)


def _seen_outcome(row: Mapping[Any, Any], event_id: str, fingerprint: str) -> EventOutcome:
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


def _earn_entry(entry_id: UUID, account_id: UUID, balance_after: int, revision_after: int,
                rule: EarnRule, points: int, event_id: str, event_type: str,
                order: OrderCompletedEvent | None, description: str) -> dict[str, Any]:
    return {
        "id": entry_id,
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
    }


def _set_based(sql: str) -> str:
    """A batch statement for `exec_driver_sql`: its `:name` arrays are sent in binary.

    psycopg quotes every element of an array sent as text, with a regular expression
    each: for a batch that is ~13,000 calls. Binary arrays are packed in C.
    """
    return re.sub(r"(?<![:\w]):(\w+)", r"%(\1)b", sql)


def _unnest_insert(table: str, columns: dict[str, str], stamp: str | None = None) -> str:
    """A multi-row INSERT whose text never changes: one array per column, rows in order.

    Constant SQL is compiled and planned once; a VALUES list would be rebuilt, in
    Python, for every batch.
    """
    names = ", ".join(columns)
    arrays = ", ".join(f"CAST(:{c} AS {t}[])" for c, t in columns.items())
    # `stamp`: a time column set when the rows are written, not when the batch began.
    into, select = (f"{names}, {stamp}", f"{names}, clock_timestamp()") if stamp else (names, names)
    sql = (f"INSERT INTO {table} ({into}) SELECT {select} FROM unnest({arrays})"  # noqa: S608
           f" WITH ORDINALITY AS rows({names}, n) ORDER BY n")
    return _set_based(sql)


#: Which (account, order) pairs have earned already: one index probe per pair
#: (uq_ledger_entries_one_order), where a row-value IN list is planned as a scan.
_EARNED_ORDERS = _set_based(
    "SELECT e.account_id, e.order_id, e.event_id, pe.payload FROM unnest(CAST(:accounts AS uuid[]),"
    " CAST(:orders AS text[])) AS p(account_id, order_id)"
    " JOIN ledger_entries e ON e.account_id = p.account_id AND e.order_id = p.order_id"
    " AND e.type = 'EARN' AND e.order_id IS NOT NULL"
    " LEFT JOIN processed_events pe ON pe.event_id = e.event_id")

# The batch path's statements are constant text with one array per list, so that
# SQLAlchemy compiles nothing per batch (an IN list or a VALUES list of 500 rows costs
# more Python time than PostgreSQL spends on the statement).
_LOCK_ORDER_ACCOUNTS = _set_based(
    "SELECT id, contact_id, balance, revision FROM accounts"
    " WHERE contact_id = ANY(CAST(:contacts AS text[])) ORDER BY id FOR UPDATE")
_SEEN_EVENTS = _set_based(
    "SELECT event_id, fingerprint, outcome, points, account_id, ledger_entry_id, detail"
    " FROM processed_events WHERE event_id = ANY(CAST(:events AS text[]))")
#: One UPDATE for all credited accounts; the revision counts changes, one per entry,
#: as one by one.
_CREDIT_ACCOUNTS = _set_based(
    "UPDATE accounts a SET balance = a.balance + d.points, earned = a.earned + d.points,"
    " revision = a.revision + d.entries, updated_at = now(), last_activity_at = now()"
    " FROM unnest(CAST(:ids AS uuid[]), CAST(:points AS bigint[]), CAST(:entries AS bigint[]))"
    " AS d(id, points, entries) WHERE a.id = d.id")

_LOCK_LETTERS = _set_based(
    "SELECT id, task_name, payload, headers, status, reason FROM dead_letters"
    " WHERE id = ANY(CAST(:ids AS bigint[])) ORDER BY id FOR UPDATE")
_LETTERS_REPLAYED = _set_based(
    "UPDATE dead_letters d SET status = 'replayed', replayed_at = now(),"
    " replay_outcome = CAST(u.outcome AS jsonb)"
    " FROM unnest(CAST(:ids AS bigint[]), CAST(:outcomes AS text[])) AS u(id, outcome)"
    " WHERE d.id = u.id")
#: A failed replay keeps the reason the letter was kept for (and its error detail);
#: what the replay ran into goes in replay_outcome.
_LETTERS_FAILED_AGAIN = _set_based(
    "UPDATE dead_letters d SET attempts = d.attempts + 1, last_failed_at = now(),"
    " replay_outcome = CAST(u.outcome AS jsonb)"
    " FROM unnest(CAST(:ids AS bigint[]), CAST(:outcomes AS text[])) AS u(id, outcome)"
    " WHERE d.id = u.id")

_ENTRY_COLUMNS = {
    "id": "uuid", "account_id": "uuid", "type": "text", "amount": "bigint",
    "balance_after": "bigint", "description": "text", "idempotency_key": "text",
    "event_type": "text", "event_id": "text", "order_id": "text", "rule_id": "bigint",
    "rule_revision": "bigint", "account_revision": "bigint", "order_total": "numeric",
    "currency": "text",
}
_PROCESSED_COLUMNS = {
    "event_id": "text", "event_type": "text", "fingerprint": "text", "contact_id": "text",
    "account_id": "uuid", "order_id": "text", "outcome": "text", "points": "bigint",
    "ledger_entry_id": "uuid", "payload": "jsonb", "detail": "jsonb",
}
_INSERT_ENTRIES = _unnest_insert("ledger_entries", _ENTRY_COLUMNS)
_INSERT_PROCESSED = _unnest_insert("processed_events", _PROCESSED_COLUMNS, "processed_at")


def _columns(rows: list[dict[str, Any]], columns: dict[str, str]) -> dict[str, list[Any]]:
    return {c: [row[c] for row in rows] for c in columns}


def _storable(text: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL; a dead letter must be storable whatever it holds."""
    return text.replace("\x00", "\\x00") if text is not None else None


def _storable_json(value: Any) -> Any:
    """jsonb refuses NUL as well, in keys and in values."""
    if isinstance(value, str):
        return _storable(value)
    if isinstance(value, dict):
        return {_storable(k): _storable_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable_json(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, UUID | Decimal):
        return str(value) if isinstance(value, UUID) else int(value)
    return value


def _uuid(value: str, what: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise InvalidPayload(f"{what} {value!r} is not a UUID") from None


def _rule(row: Mapping[Any, Any]) -> EarnRule:
    return EarnRule(**{k: row[k] for k in (
        "id", "name", "trigger", "kind", "points", "money_amount", "currency", "status", "revision"
    )})


def _check_name(name: str) -> None:
    if not 1 <= len(name) <= 100:
        raise InvalidRule("name must be 1 to 100 characters")


def _rule_conflict(exc: LedgerIntegrityError) -> RuleError:
    if "uq_earn_rules_one_active" in str(exc):
        return RuleError(
            "another ACTIVE rule already exists for this trigger and currency: pause it first"
        )
    return RuleError(str(exc))


__all__ = ["EventOutcome", "Ledger", "LedgerIntegrityError"]
