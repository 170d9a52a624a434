"""Issue 7's findings, done the way they were found: raw SQL as the application role, and
as the owner where the application role is not even allowed to try. Each must be refused
(by a privilege or a named constraint) or, when done as a superuser with triggers off,
reported by `verify`.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from loyalty.ledger import Ledger
from tests.conftest import APP_ROLE, connect
from tests.integration.test_invariants_sql import ADJUST, CREDIT, denied, refused
from tests.integration.test_ledger import order, signup


@pytest.fixture
def account_id(ledger: Ledger) -> str:
    ledger.apply_signup(signup("c1"))
    ledger.apply_order(order("c1", "A", "10"))
    return ledger.get_account(contact_id="c1")["id"]


@pytest.mark.parametrize("sql", [
    "CREATE TEMP TABLE accounts (id uuid, balance bigint)",
    "TRUNCATE ledger_entries",
    "ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_checked",
    "ALTER TABLE accounts DROP CONSTRAINT ck_accounts_balance_not_negative",
    "CREATE TABLE shadow (id int)",
    "DROP TRIGGER accounts_revision_step ON accounts",
    "SET session_replication_role = replica",
    "INSERT INTO earn_rule_revisions (rule_id, revision, trigger, kind, points, status)"
    " VALUES (2, 99, 'order.completed', 'fixed', 1000, 'ACTIVE')",
])
def test_the_application_role_cannot(raw: psycopg.Connection, account_id: str, sql: str) -> None:
    with pytest.raises((psycopg.errors.InsufficientPrivilege, psycopg.errors.InvalidSchemaName)) \
            as info, raw.transaction():
        raw.execute(sql)
    assert "permission denied" in str(info.value) or "must be owner" in str(info.value)


def test_the_application_role_owns_nothing_and_is_no_superuser(raw: psycopg.Connection) -> None:
    role = raw.execute("SELECT rolsuper, rolcreatedb, rolcreaterole, rolbypassrls FROM pg_roles"
                       " WHERE rolname = current_user").fetchone()
    assert role == (False, False, False, False)
    owned = raw.execute(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND pg_get_userbyid(c.relowner) = current_user").fetchone()
    assert owned == (0,)
    assert raw.execute("SELECT current_user").fetchone() == (APP_ROLE,)


def test_the_application_role_cannot_choose_seq(raw: psycopg.Connection, account_id: str) -> None:
    """Finding 5: it has INSERT on every column of the ledger but seq."""
    assert "permission denied" in denied(
        raw, "INSERT INTO ledger_entries (seq, account_id, type, amount, balance_after,"
             " idempotency_key, actor, balance_before, account_revision)"
             " OVERRIDING SYSTEM VALUE VALUES (-1, %s, 'ADJUST', 5, 115, 'x', 'm', 110, 4)",
        (account_id,))


def _owner_adjust(raw_owner: psycopg.Connection, account_id: str, seq: int) -> str | None:
    with pytest.raises(psycopg.errors.IntegrityError) as info, raw_owner.transaction():
        raw_owner.execute(CREDIT, (5, 5, account_id))
        raw_owner.execute(
            "INSERT INTO ledger_entries (seq, account_id, type, amount, balance_after,"
            " idempotency_key, actor, balance_before, account_revision) OVERRIDING SYSTEM VALUE"
            " VALUES (%s, %s, 'ADJUST', 5, 115, 'x', 'm', 110, 4)", (seq, account_id))
    return info.value.diag.constraint_name


def test_client_chosen_seqs_are_refused_even_for_the_owner(raw_owner: psycopg.Connection,
                                                           account_id: str,
                                                           ledger: Ledger) -> None:
    # Back-dated below zero, and far ahead (which would make the account unwritable).
    assert _owner_adjust(raw_owner, account_id, -1) == "ck_ledger_entries_seq_positive"
    assert _owner_adjust(raw_owner, account_id, 9 * 10**18) == "ledger_entries_seq_issued"
    # A seq the sequence did issue, but below the account's last entry.
    skipped = raw_owner.execute("SELECT nextval('ledger_entries_seq_seq')").fetchone()
    ledger.apply_order(order("c1", "B", "7"))
    assert skipped is not None
    assert _owner_adjust(raw_owner, account_id, skipped[0]) in (
        "ledger_entries_seq_order", "ledger_entries_balance_chain")
    ledger.apply_order(order("c1", "C", "3"))  # the account stays writable
    assert ledger.get_account(contact_id="c1")["points"]["balance"] == 120
    assert ledger.verify()["ok"]


def test_bare_entry_racing_a_writer_is_refused(db_url: str, account_id: str,
                                               ledger: Ledger) -> None:
    """The exact race of finding 5: B inserts a bare entry (taking its seq) while A holds the
    lock; A then inserts a later seq and commits. B's statement check, run after the lock,
    sees an entry above its own and refuses."""
    a, b = connect(db_url), connect(db_url)
    a.autocommit = b.autocommit = False
    outcome: dict[str, Any] = {}
    try:
        a.execute(CREDIT, (10, 10, account_id))

        def bare_entry() -> None:
            try:
                b.execute(ADJUST, (account_id, 10, 120, "b", 110, 4))
                b.commit()
                outcome["b"] = "committed"
            except psycopg.errors.IntegrityError as exc:
                b.rollback()
                outcome["b"] = exc.diag.constraint_name

        thread = threading.Thread(target=bare_entry)
        thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until B waits for the lock, its seq taken
            waiting = a.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database()").fetchone()
            if waiting and waiting[0]:
                break
            time.sleep(0.05)
        a.execute(ADJUST, (account_id, 10, 120, "a", 110, 4))
        a.commit()
        thread.join(30)
    finally:
        a.close()
        b.close()
    assert outcome["b"] == "ledger_entries_seq_order"
    balance = ledger.get_account(contact_id="c1")["points"]["balance"]
    assert balance == 120
    assert ledger.verify()["ok"]


def test_temporary_tables_cannot_shadow_the_ledger(raw_owner: psycopg.Connection,
                                                   account_id: str, ledger: Ledger) -> None:
    """Finding 4, as a role that may create temporary tables: the trigger functions name
    their tables with the schema and fix their search_path, so the shadows are ignored."""
    raw_owner.execute("CREATE TEMP TABLE accounts (id uuid, balance bigint, revision bigint)")
    raw_owner.execute("CREATE TEMP TABLE ledger_entries (account_id uuid, seq bigint,"
                      " balance_after bigint, account_revision bigint)")
    raw_owner.execute("INSERT INTO pg_temp.accounts VALUES (%s, 0, 1)", (account_id,))
    assert refused(raw_owner, "UPDATE public.accounts SET balance = 1000000, adjusted = adjusted"
                   " + 999890, revision = revision + 1 WHERE id = %s",
                   (account_id,)) == "accounts_balance_matches_ledger"
    assert refused(raw_owner, "INSERT INTO public.ledger_entries (account_id, type, amount,"
                   " balance_after, idempotency_key, actor, balance_before, account_revision)"
                   " VALUES (%s, 'ADJUST', 777, 777, 'bogus', 'm', 0, 4)",
                   (account_id,)) == "ledger_entries_balance_chain"
    assert ledger.verify()["ok"]


def test_every_function_has_a_fixed_search_path(raw: psycopg.Connection) -> None:
    rows = raw.execute(
        "SELECT p.proname, p.proconfig FROM pg_proc p JOIN pg_namespace n"
        " ON n.oid = p.pronamespace WHERE n.nspname = 'public'").fetchall()
    assert rows
    for name, config in rows:
        assert config and "search_path=pg_catalog, pg_temp" in config, name


@pytest.mark.parametrize("who", ["owner", "superuser"])
def test_verify_reports_a_consistent_rewrite(raw_super: psycopg.Connection,
                                             raw_owner: psycopg.Connection, account_id: str,
                                             ledger: Ledger, who: str) -> None:
    """Finding 8: with triggers off (the owner disables its own, a superuser switches all
    off), an order's EARN raised by 900 and every balance column made to agree. Only
    recomputing the EARN from its rule and order total shows it."""
    ledger.apply_order(order("c1", "B", "49.90"))
    assert ledger.verify()["ok"]
    rewriter = raw_owner if who == "owner" else raw_super
    with rewriter.transaction():
        if who == "owner":
            rewriter.execute("ALTER TABLE ledger_entries DISABLE TRIGGER USER")
            rewriter.execute("ALTER TABLE accounts DISABLE TRIGGER USER")
            rewriter.execute("ALTER TABLE point_lots DISABLE TRIGGER USER")
        else:
            rewriter.execute("SET LOCAL session_replication_role = replica")
        rewriter.execute("UPDATE ledger_entries SET amount = amount + 900,"
                         " balance_after = balance_after + 900 WHERE order_id = 'B'")
        rewriter.execute("UPDATE processed_events SET points = points + 900 WHERE order_id = 'B'")
        rewriter.execute("UPDATE accounts SET balance = balance + 900, earned = earned + 900,"
                         " revision = revision WHERE id = %s", (account_id,))
        rewriter.execute("UPDATE ledger_totals SET earned = earned + 900 WHERE account_id = %s",
                         (account_id,))
        # Its lot too (0011), or `lots_equal_balance` would show the rewrite.
        rewriter.execute("UPDATE point_lots SET amount = amount + 900, remaining = remaining + 900"
                         " WHERE entry_id = (SELECT id FROM ledger_entries WHERE order_id = 'B')")
        # And what the database keeps of the lots (0013), or `lot_totals_equal_lots` would.
        rewriter.execute("UPDATE lot_totals SET available = available + 900"
                         " WHERE account_id = %s", (account_id,))
        if who == "owner":
            rewriter.execute("ALTER TABLE ledger_entries ENABLE TRIGGER USER")
            rewriter.execute("ALTER TABLE accounts ENABLE TRIGGER USER")
            rewriter.execute("ALTER TABLE point_lots ENABLE TRIGGER USER")
    report = ledger.verify()
    assert [v["check"] for v in report["violations"]] == ["earn_follows_rule"]
    assert report["violations"][0]["amount"] == 949
    assert report["violations"][0]["expected"] == 49


def test_verify_reports_seq_and_revision_anomalies(raw_super: psycopg.Connection,
                                                   account_id: str, ledger: Ledger) -> None:
    """With triggers off: an entry far ahead of the sequence, then one whose seq is below
    the entry before it by revision. Each is otherwise consistent."""
    skipped = raw_super.execute("SELECT nextval('ledger_entries_seq_seq')").fetchone()
    assert skipped is not None
    ledger.apply_order(order("c1", "B", "5"))  # balance 115, revision 4
    raw_super.execute("SET session_replication_role = replica")
    entry = ("INSERT INTO ledger_entries (seq, account_id, type, amount, balance_after,"
             " idempotency_key, actor, balance_before, account_revision) OVERRIDING SYSTEM VALUE"
             " VALUES (%s, %s, 'ADJUST', 5, %s, %s, 'm', %s, %s)")
    with raw_super.transaction():
        raw_super.execute(entry, (skipped[0], account_id, 120, "low", 115, 5))
        raw_super.execute(CREDIT, (5, 5, account_id))
    checks = [v["check"] for v in ledger.verify()["violations"]]
    assert "seq_order" in checks
    with raw_super.transaction():
        raw_super.execute(entry, (9 * 10**18, account_id, 125, "high", 120, 6))
        raw_super.execute(CREDIT, (5, 5, account_id))
    checks = [v["check"] for v in ledger.verify()["violations"]]
    assert "seq_issued" in checks


def test_rule_history_is_written_by_the_database(ledger: Ledger, raw: psycopg.Connection) -> None:
    rule = ledger.create_rule(name="Double", trigger="order.completed", kind="conversion",
                              points=2, money_amount=Decimal("1"),
                              currency="EUR")
    ledger.update_rule(rule["id"], points=3)
    rows = raw.execute("SELECT revision, points FROM earn_rule_revisions WHERE rule_id = %s"
                       " ORDER BY revision", (rule["id"],)).fetchall()
    assert rows == [(1, 2), (2, 3)]
