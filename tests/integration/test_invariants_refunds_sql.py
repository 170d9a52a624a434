"""Raw SQL that tries to break the REVERSE and activity invariants (migration 0009).

As the application role and as the schema owner (who can do anything the triggers do
not forbid, but leaves them on): PostgreSQL must refuse, naming what refused.
Everything commits (autocommit), so deferred checks fire.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from loyalty.ledger import Ledger
from tests.conftest import connect, owner_url
from tests.integration.test_invariants_sql import refused
from tests.integration.test_ledger import order, signup


@pytest.fixture(params=["app", "owner"])
def conn(request: pytest.FixtureRequest, db_url: str) -> Iterator[psycopg.Connection]:
    c = connect(db_url if request.param == "app" else owner_url(db_url))
    yield c
    c.close()


@pytest.fixture
def ids(ledger: Ledger) -> dict[str, str]:
    """c1: signup (100) and order A of 10 USD (10 points), balance 110, revision 3; c2 too."""
    for contact in ("c1", "c2"):
        ledger.apply_signup(signup(contact))
        ledger.apply_order(order(contact, "A", "10", event_id=f"order-A-{contact}"))
    found = {}
    for contact in ("c1", "c2"):
        items = ledger.list_transactions(contact_id=contact)["items"]
        found[contact] = items[0]["account_id"]
        found[f"{contact}_order"] = items[0]["id"]
        found[f"{contact}_signup"] = items[1]["id"]
    return found


def reverse(conn: psycopg.Connection, account: str, earn: str, points: int, *,
            order_id: str = "A", reversed_by: int | None = None, balance_after: int | None = None,
            refund_id: str = "r1") -> str | None:
    """Take `points` back from account (balance 110, revision 3) as one REVERSE entry."""
    moved = points if reversed_by is None else reversed_by
    return refused(conn, (
        "WITH a AS (UPDATE accounts SET balance = balance - %s, reversed = reversed + %s,"
        " earned = earned - %s + %s, revision = revision + 1 WHERE id = %s RETURNING id)"
        " INSERT INTO ledger_entries (account_id, type, amount, balance_after, idempotency_key,"
        " event_type, event_id, order_id, refund_id, reverses_entry_id, account_revision)"
        " SELECT id, 'REVERSE', %s, %s, 'event:' || %s, 'order.refunded', %s, %s, %s, %s, 4"
        " FROM a"), (points, moved, points, moved, account, -points,
                     110 - points if balance_after is None else balance_after,
                     f"e-{refund_id}", f"e-{refund_id}", order_id, refund_id, earn))


def test_a_reverse_must_reverse_the_earn_of_its_order(conn: psycopg.Connection,
                                                      ids: dict[str, str]) -> None:
    assert reverse(conn, ids["c1"], ids["c1_signup"], 5) == "ledger_entries_reverses_order_earn"
    assert reverse(conn, ids["c1"], ids["c2_order"], 5) == "ledger_entries_reverses_order_earn"
    assert reverse(conn, ids["c1"], ids["c1_order"], 5, order_id="B") \
        == "ledger_entries_reverses_order_earn"


def test_reversals_never_exceed_what_the_order_earned(conn: psycopg.Connection,
                                                      ids: dict[str, str]) -> None:
    assert reverse(conn, ids["c1"], ids["c1_order"], 11) == "ledger_entries_reversals_within_earned"


def test_accounts_reversed_is_the_sum_of_its_reverse_entries(conn: psycopg.Connection,
                                                             ids: dict[str, str]) -> None:
    # The balance adds up (earned moved instead), but `reversed` does not match the entry.
    assert reverse(conn, ids["c1"], ids["c1_order"], 5, reversed_by=4) \
        == "accounts_reversed_matches_ledger"
    # `reversed` raised with no REVERSE entry at all, the identity kept by `earned`: the
    # per-type totals the database keeps (0008, with `reversed` since 0009) refuse it.
    assert refused(conn, (
        "WITH a AS (UPDATE accounts SET reversed = reversed + 5, earned = earned + 5,"
        " revision = revision + 1 WHERE id = %s RETURNING id)"
        " INSERT INTO ledger_entries (account_id, type, amount, balance_after, idempotency_key,"
        " actor, balance_before, account_revision) SELECT id, 'ADJUST', 0, 110, 'x', 'm', 110, 4"
        " FROM a"), (ids["c1"],)) == "accounts_totals_match_ledger"


def test_the_identity_counts_reversed(conn: psycopg.Connection, ids: dict[str, str]) -> None:
    assert refused(conn, "UPDATE accounts SET reversed = 5, revision = revision + 1"
                         " WHERE id = %s", (ids["c1"],)) == "ck_accounts_balance_adds_up"


@pytest.mark.parametrize(("change", "constraint"), [
    ("positive", "ck_ledger_entries_amount_sign"),
    ("no_source", "ck_ledger_entries_reverse_has_source"),
])
def test_reverse_shape(conn: psycopg.Connection, ids: dict[str, str], change: str,
                       constraint: str) -> None:
    amount, source = (5, ids["c1_order"]) if change == "positive" else (-5, None)
    # The account's own columns add up either way: only the entry is wrong.
    moved = "earned = earned + 5" if change == "positive" else "reversed = reversed + 5"
    assert refused(conn, (
        f"WITH a AS (UPDATE accounts SET balance = balance + %s, {moved},"
        " revision = revision + 1 WHERE id = %s RETURNING id)"
        " INSERT INTO ledger_entries (account_id, type, amount, balance_after, idempotency_key,"
        " event_type, event_id, order_id, refund_id, reverses_entry_id, account_revision)"
        " SELECT id, 'REVERSE', %s, 110 + %s, 'event:x', 'order.refunded', 'x', 'A', 'r', %s, 4"
        " FROM a"), (amount, ids["c1"], amount, amount, source)) == constraint


def test_a_refund_reverses_once(conn: psycopg.Connection, ids: dict[str, str]) -> None:
    conn.execute(
        "WITH a AS (UPDATE accounts SET balance = balance - 5, reversed = reversed + 5,"
        " revision = revision + 1 WHERE id = %s RETURNING id)"
        " INSERT INTO ledger_entries (account_id, type, amount, balance_after, idempotency_key,"
        " event_type, event_id, order_id, refund_id, reverses_entry_id, account_revision)"
        " SELECT id, 'REVERSE', -5, 105, 'event:y1', 'order.refunded', 'y1', 'A', 'r1', %s, 4"
        " FROM a", (ids["c1"], ids["c1_order"]))
    with pytest.raises(psycopg.errors.UniqueViolation) as info, conn.transaction():
        conn.execute(
            "WITH a AS (UPDATE accounts SET balance = balance - 1, reversed = reversed + 1,"
            " revision = revision + 1 WHERE id = %s RETURNING id)"
            " INSERT INTO ledger_entries (account_id, type, amount, balance_after,"
            " idempotency_key, event_type, event_id, order_id, refund_id, reverses_entry_id,"
            " account_revision) SELECT id, 'REVERSE', -1, 104, 'event:y2', 'order.refunded',"
            " 'y2', 'A', 'r1', %s, 5 FROM a", (ids["c1"], ids["c1_order"]))
    assert info.value.diag.constraint_name == "uq_ledger_entries_one_reversal"


def test_order_refunds_add_up_and_are_append_only(conn: psycopg.Connection,
                                                  ids: dict[str, str]) -> None:
    conn.execute("INSERT INTO processed_events (event_id, event_type, fingerprint, contact_id,"
                 " account_id, order_id, outcome, points) VALUES ('e-r', 'order.refunded', 'f',"
                 " 'c1', %s, 'A', 'refund_recorded', 0)", (ids["c1"],))
    insert = ("INSERT INTO order_refunds (account_id, order_id, refund_id, event_id, amount,"
              " currency, earn_entry_id, due, taken, shortfall)"
              " VALUES (%s, 'A', 'r', 'e-r', 1, 'USD', %s, %s, %s, %s)")
    assert refused(conn, insert, (ids["c1"], ids["c1_order"], 3, 0, 2)) \
        == "ck_order_refunds_due_adds_up"
    assert refused(conn, insert, (ids["c1"], ids["c1_order"], 3, 3, 0)) \
        == "ck_order_refunds_taken_has_entry"
    assert refused(conn, insert, (ids["c1"], None, 3, 0, 3)) == "ck_order_refunds_due_has_earn"
    conn.execute(insert, (ids["c1"], ids["c1_order"], 1, 0, 1))
    with pytest.raises(psycopg.errors.Error) as info, conn.transaction():
        conn.execute("UPDATE order_refunds SET shortfall = 0, due = 0")
    assert isinstance(info.value, psycopg.errors.InsufficientPrivilege) \
        or info.value.diag.constraint_name == "ledger_entries_append_only"


ACTIVITY_EARN = (
    "WITH a AS (UPDATE accounts SET balance = balance + 25, earned = earned + 25,"
    " revision = revision + 1 WHERE id = %s RETURNING id)"
    " INSERT INTO ledger_entries (account_id, type, amount, balance_after, idempotency_key,"
    " event_type, event_id, rule_id, rule_revision, activity, reference_id, account_revision)"
    " SELECT id, 'EARN', 25, 135, 'event:' || %s, 'activity', %s, %s, 1, %s, %s, 4 FROM a")


def test_an_activity_earns_once_per_reference_and_by_its_rule(
        conn: psycopg.Connection, ledger: Ledger, ids: dict[str, str]) -> None:
    review = ledger.create_rule(name="Reviews", trigger="activity", kind="fixed", points=25,
                                money_amount=None, currency=None, activity="review")["id"]
    assert refused(conn, ACTIVITY_EARN, (ids["c1"], "a1", "a1", review, "share", "p1")) \
        == "fk_ledger_entries_rule_id_activity_earn_rules"
    assert refused(conn, ACTIVITY_EARN, (ids["c1"], "a1", "a1", review, None, None)) \
        == "ck_ledger_entries_activity_earn_has_activity"
    conn.execute(ACTIVITY_EARN, (ids["c1"], "a1", "a1", review, "review", "p1"))
    with pytest.raises(psycopg.errors.UniqueViolation) as info, conn.transaction():
        conn.execute(ACTIVITY_EARN.replace("135", "160").replace(", 4 FROM", ", 5 FROM"),
                     (ids["c1"], "a2", "a2", review, "review", "p1"))
    assert info.value.diag.constraint_name == "uq_ledger_entries_one_activity_reference"


@pytest.mark.parametrize(("values", "constraint"), [
    ("'x', 'activity', 'fixed', 5, NULL, NULL, 'ACTIVE', NULL",
     "ck_earn_rules_activity_rule_names_activity"),
    ("'x', 'signup', 'fixed', 5, NULL, NULL, 'ACTIVE', 'review'",
     "ck_earn_rules_activity_rule_names_activity"),
    ("'x', 'activity', 'conversion', 5, 1, NULL, 'ACTIVE', 'review'",
     "ck_earn_rules_activity_is_fixed"),
    ("'x', 'activity', 'fixed', 5, NULL, NULL, 'ACTIVE', 'review'", "uq_earn_rules_one_active"),
])
def test_activity_rule_shape_and_one_active_per_activity(
        conn: psycopg.Connection, ledger: Ledger, values: str, constraint: str) -> None:
    ledger.create_rule(name="Reviews", trigger="activity", kind="fixed", points=25,
                       money_amount=None, currency=None, activity="review")
    assert refused(conn, "INSERT INTO earn_rules (name, trigger, kind, points, money_amount,"
                         f" currency, status, activity) VALUES ({values})") == constraint


def test_verify_reports_a_reversal_rewritten_behind_the_triggers(
        ledger: Ledger, ids: dict[str, str], raw_super: psycopg.Connection) -> None:
    """A superuser with the triggers off can write anything; verify still sees it."""
    raw_super.execute("SET session_replication_role = replica")
    raw_super.execute(
        "WITH a AS (UPDATE accounts SET balance = balance - 50, reversed = reversed + 50,"
        " revision = revision + 1 WHERE id = %s RETURNING id)"
        " INSERT INTO ledger_entries (account_id, type, amount, balance_after, idempotency_key,"
        " event_type, event_id, order_id, refund_id, reverses_entry_id, account_revision)"
        " SELECT id, 'REVERSE', -50, 60, 'event:z', 'order.refunded', 'z', 'A', 'r', %s, 4"
        " FROM a", (ids["c1"], ids["c1_signup"]))
    checks = {v["check"] for v in ledger.verify()["violations"]}
    assert {"reverse_references_order_earn", "reverse_has_refund"} <= checks
