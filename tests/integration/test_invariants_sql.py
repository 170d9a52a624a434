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


def refused(raw: psycopg.Connection, sql: str, params: tuple = ()) -> str | None:
    """Run `sql` in a transaction that must be refused; returns the constraint that did."""
    with pytest.raises(psycopg.errors.IntegrityError) as info, raw.transaction():
        raw.execute(sql, params)
    return info.value.diag.constraint_name


def denied(raw: psycopg.Connection, sql: str, params: tuple = ()) -> str:
    """Run `sql`, which the role has no right to run; returns PostgreSQL's message."""
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as info, raw.transaction():
        raw.execute(sql, params)
    return str(info.value)


#: The account fixture stands at balance 110, revision 3 (a signup, then order A).
ADJUST = ("INSERT INTO ledger_entries (account_id, type, amount, balance_after, idempotency_key,"
          " actor, balance_before, account_revision) VALUES (%s, 'ADJUST', %s, %s, %s, 'm', %s, %s)")
CREDIT = ("UPDATE accounts SET balance = balance + %s, adjusted = adjusted + %s,"
          " revision = revision + 1 WHERE id = %s")


def test_balance_cannot_go_negative(raw: psycopg.Connection, account_id: str) -> None:
    assert refused(raw, "UPDATE accounts SET balance = -1, adjusted = adjusted - 111, "
                        "revision = revision + 1 WHERE id = %s",
                   (account_id,)) == "ck_accounts_balance_not_negative"


def test_balance_must_add_up(raw: psycopg.Connection, account_id: str) -> None:
    assert refused(
        raw, "UPDATE accounts SET balance = balance + 5, revision = revision + 1 WHERE id = %s",
        (account_id,)) == "ck_accounts_balance_adds_up"


def test_balance_must_equal_the_ledger(raw: psycopg.Connection, account_id: str) -> None:
    # Adds up by its own columns, but no ledger entry backs it: refused at COMMIT.
    assert refused(raw, CREDIT, (5, 5, account_id)) == "accounts_balance_matches_ledger"


def test_entry_without_account_update_is_refused(raw: psycopg.Connection,
                                                 account_id: str) -> None:
    assert refused(raw, ADJUST, (account_id, 5, 115, "x", 110, 4)) \
        == "accounts_balance_matches_ledger"


def test_entry_must_chain_from_the_previous_balance(raw: psycopg.Connection,
                                                    account_id: str) -> None:
    assert refused(raw, ADJUST, (account_id, 5, 500, "x", 495, 4)) == "ledger_entries_balance_chain"


@pytest.mark.parametrize("sql", [
    "UPDATE ledger_entries SET amount = 1000",
    "DELETE FROM ledger_entries",
    "TRUNCATE ledger_entries CASCADE",
])
def test_ledger_is_append_only(raw: psycopg.Connection, raw_owner: psycopg.Connection,
                               account_id: str, sql: str) -> None:
    """The application role has no right to; the owner, which has, is stopped by a trigger."""
    assert "permission denied" in denied(raw, sql)
    assert refused(raw_owner, sql) == "ledger_entries_append_only"


def test_revision_only_goes_up(raw: psycopg.Connection, account_id: str) -> None:
    assert refused(raw, "UPDATE accounts SET revision = revision - 1 WHERE id = %s",
                   (account_id,)) == "accounts_revision_step"
    assert refused(raw, "UPDATE accounts SET updated_at = now() WHERE id = %s",
                   (account_id,)) == "accounts_revision_step"


@pytest.mark.parametrize("revision", ["revision + 1000", "9223372036854775807"])
def test_revision_cannot_jump(raw: psycopg.Connection, account_id: str, revision: str) -> None:
    """Finding 7: a revision moved by more than the entries written is refused."""
    assert refused(raw, f"UPDATE accounts SET revision = {revision} WHERE id = %s",
                   (account_id,)) == "accounts_revision_matches_ledger"
    # ... also together with a real entry: one entry moves the revision by exactly one.
    with pytest.raises(psycopg.errors.IntegrityError) as info, raw.transaction():
        raw.execute("UPDATE accounts SET balance = 115, adjusted = adjusted + 5,"
                    " revision = revision + 2 WHERE id = %s", (account_id,))
        raw.execute(ADJUST, (account_id, 5, 115, "x", 110, 4))
    assert info.value.diag.constraint_name == "accounts_revision_matches_ledger"
    with pytest.raises(psycopg.errors.IntegrityError) as info, raw.transaction():
        raw.execute("UPDATE accounts SET balance = 115, adjusted = adjusted + 5,"
                    " revision = revision + 2 WHERE id = %s", (account_id,))
        raw.execute(ADJUST, (account_id, 5, 115, "x", 110, 5))
    assert info.value.diag.constraint_name == "ledger_entries_revision_chain"


def test_order_earns_once_per_account_even_in_raw_sql(raw: psycopg.Connection,
                                                      account_id: str) -> None:
    with pytest.raises(psycopg.errors.UniqueViolation) as info, raw.transaction():
        raw.execute("UPDATE accounts SET balance = balance + 10, earned = earned + 10, "
                    "revision = revision + 1 WHERE id = %s", (account_id,))
        raw.execute(
            "INSERT INTO ledger_entries (account_id, type, amount, balance_after, "
            "idempotency_key, event_type, event_id, order_id, rule_id, rule_revision, "
            "order_total, currency, account_revision) VALUES (%s, 'EARN', 10, 120, "
            "'event:other', 'order.completed', 'other', 'A', 2, 1, 10, 'USD', 4)", (account_id,))
    assert info.value.diag.constraint_name == "uq_ledger_entries_one_order"


def test_second_signup_earn_is_refused(raw: psycopg.Connection, account_id: str) -> None:
    with pytest.raises(psycopg.errors.UniqueViolation) as info, raw.transaction():
        raw.execute("UPDATE accounts SET balance = balance + 100, earned = earned + 100, "
                    "revision = revision + 1 WHERE id = %s", (account_id,))
        raw.execute(
            "INSERT INTO ledger_entries (account_id, type, amount, balance_after, "
            "idempotency_key, event_type, event_id, rule_id, rule_revision, account_revision) "
            "VALUES (%s, 'EARN', 100, 210, 'event:s2', 'signup', 's2', 1, 1, 4)", (account_id,))
    assert info.value.diag.constraint_name == "uq_ledger_entries_one_signup"


@pytest.mark.parametrize(("event_type", "rule_id", "constraint"), [
    ("signup ", 1, "ck_ledger_entries_event_type_known"),  # finding 6: a trailing space
    ("anything", 1, "ck_ledger_entries_event_type_known"),
    ("order.completed", 1, "fk_ledger_entries_rule_id_earn_rules"),  # the signup rule
])
def test_earn_event_type_is_closed_and_matches_its_rule(
        raw: psycopg.Connection, account_id: str, event_type: str, rule_id: int,
        constraint: str) -> None:
    assert refused(
        raw, "WITH a AS (UPDATE accounts SET balance = balance + 100, earned = earned + 100,"
             " revision = revision + 1 WHERE id = %s RETURNING id)"
             " INSERT INTO ledger_entries (account_id, type, amount, balance_after,"
             " idempotency_key, event_type, event_id, order_id, rule_id, rule_revision,"
             " order_total, currency, account_revision)"
             " SELECT id, 'EARN', 100, 210, 'event:s2', %s, 's2', 'Z', %s, 1, 100, 'USD', 4 FROM a",
        (account_id, event_type, rule_id)) == constraint


def test_an_idempotency_key_is_never_shared(raw: psycopg.Connection, account_id: str) -> None:
    """Event entries are unique by event_id, others by key; a CHECK ties an event's key to it."""
    earn = ("INSERT INTO ledger_entries (account_id, type, amount, balance_after, idempotency_key,"
            " event_type, event_id, order_id, rule_id, rule_revision, order_total, currency,"
            " account_revision) VALUES (%s, 'EARN', 5, 115, %s, 'order.completed', 'e-new', 'B',"
            " 2, 1, 5, 'USD', 4)")
    assert refused(raw, earn, (account_id, "event:someone-else")) == "ck_ledger_entries_event_key"
    # An entry without an event may not take an event's key ...
    assert refused(raw, ADJUST, (account_id, 5, 115, "event:e-new", 110, 4)) \
        == "ck_ledger_entries_event_key"
    # ... and two of them may not share one.
    with pytest.raises(psycopg.errors.UniqueViolation) as info, raw.transaction():
        raw.execute("UPDATE accounts SET balance = balance + 10, adjusted = adjusted + 10, "
                    "revision = revision + 2 WHERE id = %s", (account_id,))
        raw.execute("INSERT INTO ledger_entries (account_id, type, amount, balance_after,"
                    " idempotency_key, actor, balance_before, account_revision) VALUES"
                    " (%s, 'ADJUST', 5, 115, 'adjust:same', 'm', 110, 4),"
                    " (%s, 'ADJUST', 5, 120, 'adjust:same', 'm', 115, 5)", (account_id, account_id))
    assert info.value.diag.constraint_name == "uq_ledger_entries_idempotency_key"


@pytest.mark.parametrize(("column", "value", "constraint"), [
    # CHECKs run in name order: amount_sign, which knows every type, refuses it first.
    ("type", "'GIFT'", "ck_ledger_entries_amount_sign"),
    ("amount", "0", "ck_ledger_entries_amount_sign"),
    ("amount", "-5", "ck_ledger_entries_amount_sign"),  # EARN must be positive
])
def test_entry_shape_checks(raw: psycopg.Connection, account_id: str, column: str,
                            value: str, constraint: str) -> None:
    values = {"type": "'EARN'", "amount": "5"}
    values[column] = value
    assert refused(
        raw, "INSERT INTO ledger_entries (account_id, type, amount, balance_after, "
             "idempotency_key, event_type, event_id, rule_id, rule_revision, account_revision)"
             f" VALUES (%s, {values['type']}, {values['amount']}, 115, 'event:e', 'signup', 'e',"
             " 1, 1, 4)", (account_id,)) == constraint


def test_one_active_rule_per_trigger(raw: psycopg.Connection, account_id: str) -> None:
    assert refused(raw, "INSERT INTO earn_rules (name, trigger, kind, points) "
                        "VALUES ('dup', 'signup', 'fixed', 5)") == "uq_earn_rules_one_active"


def test_consistent_multi_statement_write_commits(raw: psycopg.Connection,
                                                  account_id: str, ledger: Ledger) -> None:
    """The control case: a correct raw write is accepted, so the refusals above mean something."""
    with raw.transaction():
        raw.execute(CREDIT, (5, 5, account_id))
        raw.execute(ADJUST, (account_id, 5, 115, "raw-ok", 110, 4))
    assert ledger.verify()["ok"]
    assert ledger.get_account(contact_id="c1")["points"]["balance"] == 115


def test_verify_reports_what_triggers_would_have_stopped(raw_super: psycopg.Connection,
                                                         account_id: str, ledger: Ledger) -> None:
    """With triggers disabled (as a careless restore might), verify still finds the damage."""
    raw_super.execute("SET session_replication_role = replica")
    raw_super.execute("UPDATE ledger_entries SET amount = 7 WHERE order_id = 'A'")
    raw_super.execute("UPDATE accounts SET revision = 99 WHERE id = %s", (account_id,))
    report = ledger.verify()
    checks = {v["check"] for v in report["violations"]}
    assert not report["ok"]
    assert {"balance_equals_ledger", "totals_equal_ledger", "balance_after_chain",
            "revision_counts_changes", "processed_event_matches_entry"} <= checks
