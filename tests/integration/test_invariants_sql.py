"""Raw SQL that skips the application and tries to break the ledger; PostgreSQL must refuse.

Deferred checks fire at COMMIT, so these run in autocommit or commit explicitly:
a test that rolled back would prove nothing.
"""

from __future__ import annotations

import psycopg
import pytest

from loyalty.ledger import Ledger
from tests.integration.test_ledger import order, signup


@pytest.fixture
def account_id(ledger: Ledger) -> str:
    ledger.apply_signup(signup("c1"))
    ledger.apply_order(order("c1", "A", "10"))
    return ledger.get_account(contact_id="c1")["id"]


def refused(raw: psycopg.Connection, sql: str, params: tuple = ()) -> str:
    with pytest.raises(psycopg.errors.IntegrityError) as info, raw.transaction():
        raw.execute(sql, params)
    return str(info.value)


def test_balance_cannot_go_negative(raw: psycopg.Connection, account_id: str) -> None:
    refused(raw, "UPDATE accounts SET balance = -1, adjusted = adjusted - 111, "
                 "revision = revision + 1 WHERE id = %s", (account_id,))


def test_balance_must_add_up(raw: psycopg.Connection, account_id: str) -> None:
    assert "balance_adds_up" in refused(
        raw, "UPDATE accounts SET balance = balance + 5, revision = revision + 1 WHERE id = %s",
        (account_id,))


def test_balance_must_equal_the_ledger(raw: psycopg.Connection, account_id: str) -> None:
    # Adds up by its own columns, but no ledger entry backs it: refused at COMMIT.
    assert "does not match its ledger" in refused(
        raw, "UPDATE accounts SET balance = balance + 5, adjusted = adjusted + 5, "
             "revision = revision + 1 WHERE id = %s", (account_id,))


def test_entry_without_account_update_is_refused(raw: psycopg.Connection,
                                                 account_id: str) -> None:
    assert "does not match its ledger" in refused(
        raw, "INSERT INTO ledger_entries (account_id, type, amount, balance_after, "
             "idempotency_key, actor, balance_before) VALUES (%s, 'ADJUST', 5, 115, 'x', 'm', 110)",
        (account_id,))


def test_entry_must_chain_from_the_previous_balance(raw: psycopg.Connection,
                                                    account_id: str) -> None:
    assert "chain" in refused(
        raw, "INSERT INTO ledger_entries (account_id, type, amount, balance_after, "
             "idempotency_key, actor, balance_before) VALUES (%s, 'ADJUST', 5, 500, 'x', 'm', 495)",
        (account_id,))


@pytest.mark.parametrize("sql", [
    "UPDATE ledger_entries SET amount = 1000",
    "DELETE FROM ledger_entries",
    "TRUNCATE ledger_entries CASCADE",
])
def test_ledger_is_append_only(raw: psycopg.Connection, account_id: str, sql: str) -> None:
    assert "append-only" in refused(raw, sql)


def test_revision_only_goes_up(raw: psycopg.Connection, account_id: str) -> None:
    assert "revision" in refused(raw, "UPDATE accounts SET revision = revision - 1 WHERE id = %s",
                                 (account_id,))
    assert "revision" in refused(raw, "UPDATE accounts SET updated_at = now() WHERE id = %s",
                                 (account_id,))


def test_order_earns_once_per_account_even_in_raw_sql(raw: psycopg.Connection,
                                                      account_id: str) -> None:
    with pytest.raises(psycopg.errors.UniqueViolation), raw.transaction():
        raw.execute("UPDATE accounts SET balance = balance + 10, earned = earned + 10, "
                    "revision = revision + 1 WHERE id = %s", (account_id,))
        raw.execute(
            "INSERT INTO ledger_entries (account_id, type, amount, balance_after, "
            "idempotency_key, event_type, event_id, order_id, rule_id, rule_revision) "
            "VALUES (%s, 'EARN', 10, 120, 'event:other', 'order.completed', 'other', 'A', 2, 1)",
            (account_id,))


def test_second_signup_earn_is_refused(raw: psycopg.Connection, account_id: str) -> None:
    with pytest.raises(psycopg.errors.UniqueViolation), raw.transaction():
        raw.execute("UPDATE accounts SET balance = balance + 100, earned = earned + 100, "
                    "revision = revision + 1 WHERE id = %s", (account_id,))
        raw.execute(
            "INSERT INTO ledger_entries (account_id, type, amount, balance_after, "
            "idempotency_key, event_type, event_id, rule_id, rule_revision) "
            "VALUES (%s, 'EARN', 100, 210, 'event:s2', 'signup', 's2', 1, 1)", (account_id,))


def test_an_idempotency_key_is_never_shared(raw: psycopg.Connection, account_id: str) -> None:
    """Event entries are unique by event_id, others by key; a CHECK ties an event's key to it."""
    earn = ("INSERT INTO ledger_entries (account_id, type, amount, balance_after, idempotency_key,"
            " event_type, event_id, order_id, rule_id, rule_revision)"
            " VALUES (%s, 'EARN', 5, 115, %s, 'order.completed', 'e-new', 'B', 2, 1)")
    assert "event_key" in refused(raw, earn, (account_id, "event:someone-else"))
    adjust = ("INSERT INTO ledger_entries (account_id, type, amount, balance_after,"
              " idempotency_key, actor, balance_before) VALUES (%s, 'ADJUST', 5, %s, %s, 'm', %s)")
    # An entry without an event may not take an event's key ...
    assert "event_key" in refused(raw, adjust, (account_id, 115, "event:e-new", 110))
    # ... and two of them may not share one.
    with pytest.raises(psycopg.errors.UniqueViolation) as info, raw.transaction():
        raw.execute("UPDATE accounts SET balance = balance + 10, adjusted = adjusted + 10, "
                    "revision = revision + 2 WHERE id = %s", (account_id,))
        raw.execute("INSERT INTO ledger_entries (account_id, type, amount, balance_after,"
                    " idempotency_key, actor, balance_before) VALUES"
                    " (%s, 'ADJUST', 5, 115, 'adjust:same', 'm', 110),"
                    " (%s, 'ADJUST', 5, 120, 'adjust:same', 'm', 115)", (account_id, account_id))
    assert "uq_ledger_entries_idempotency_key" in str(info.value)


@pytest.mark.parametrize(("column", "value"), [
    ("type", "'GIFT'"), ("amount", "-5"),  # EARN must be positive
])
def test_entry_shape_checks(raw: psycopg.Connection, account_id: str, column: str,
                            value: str) -> None:
    values = {"type": "'EARN'", "amount": "5"}
    values[column] = value
    refused(raw, "INSERT INTO ledger_entries (account_id, type, amount, balance_after, "
                 f"idempotency_key, event_type, event_id, rule_id, rule_revision) VALUES "
                 f"(%s, {values['type']}, {values['amount']}, 115, 'event:e', 'signup', 'e', 1, 1)",
            (account_id,))


def test_one_active_rule_per_trigger(raw: psycopg.Connection, account_id: str) -> None:
    refused(raw, "INSERT INTO earn_rules (name, trigger, kind, points) "
                 "VALUES ('dup', 'signup', 'fixed', 5)")


def test_consistent_multi_statement_write_commits(raw: psycopg.Connection,
                                                  account_id: str, ledger: Ledger) -> None:
    """The control case: a correct raw write is accepted, so the refusals above mean something."""
    with raw.transaction():
        raw.execute("UPDATE accounts SET balance = balance + 5, adjusted = adjusted + 5, "
                    "revision = revision + 1 WHERE id = %s", (account_id,))
        raw.execute("INSERT INTO ledger_entries (account_id, type, amount, balance_after, "
                    "idempotency_key, actor, balance_before) "
                    "VALUES (%s, 'ADJUST', 5, 115, 'raw-ok', 'dba', 110)", (account_id,))
    assert ledger.verify()["ok"]
    assert ledger.get_account(contact_id="c1")["points"]["balance"] == 115


def test_verify_reports_what_triggers_would_have_stopped(raw: psycopg.Connection,
                                                         account_id: str, ledger: Ledger) -> None:
    """With triggers disabled (as a careless restore might), verify still finds the damage."""
    raw.execute("SET session_replication_role = replica")
    raw.execute("UPDATE ledger_entries SET amount = 7 WHERE order_id = 'A'")
    raw.execute("UPDATE accounts SET revision = 99 WHERE id = %s", (account_id,))
    report = ledger.verify()
    checks = {v["check"] for v in report["violations"]}
    assert not report["ok"]
    assert {"balance_equals_ledger", "totals_equal_ledger", "balance_after_chain",
            "revision_counts_changes", "processed_event_matches_entry"} <= checks
