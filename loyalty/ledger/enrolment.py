"""Staff open accounts (Wix createAccount): the contact is registered if it is new.

An existing contact keeps its profile: only signups change it. A contact registered
here has the earliest profile time there is, so any signup event for it, however
old, still sets its details; the signup bonus is still earned once, by the signup.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.dialects.postgresql import insert as pg_insert

from loyalty import views
from loyalty.ledger.accounts import lock_account
from loyalty.ledger.boundary import run
from loyalty.ledger.staff_requests import first_result, remember
from loyalty.tables import accounts, contacts
from schemas.events import EARLIEST_OCCURRED_AT, TASK_OF, CreateAccountRequest

TASK = TASK_OF[CreateAccountRequest]


def create_account(engine: Engine, request: CreateAccountRequest) -> dict[str, Any]:
    """`{status: created | existing, account}`; a repeated request_id gets its first result."""
    return run(engine, create_work(request))


def create_work(request: CreateAccountRequest) -> Callable[[Connection], dict[str, Any]]:
    fingerprint = request.fingerprint()

    def work(conn: Connection) -> dict[str, Any]:
        # A member_id already linked to another contact is refused here, by its unique
        # index (`member_id_conflict`), and the whole request with it.
        conn.execute(pg_insert(contacts).values(
            contact_id=request.contact_id, member_id=request.member_id, email=request.email,
            name=request.name, profile_at=EARLIEST_OCCURRED_AT,
        ).on_conflict_do_nothing(index_elements=[contacts.c.contact_id]))
        created = conn.execute(
            pg_insert(accounts).values(contact_id=request.contact_id)
            .on_conflict_do_nothing(index_elements=[accounts.c.contact_id])
            .returning(accounts.c.id)).first() is not None
        account = lock_account(conn, contact_id=request.contact_id)
        assert account is not None
        first = first_result(conn, TASK, request.request_id, fingerprint)
        if first is not None:
            return first
        return remember(conn, TASK, request.request_id, fingerprint, {
            "status": "created" if created else "existing",
            "account": views.account_json(account)})

    return work
