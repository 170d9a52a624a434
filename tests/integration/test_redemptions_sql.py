"""Raw SQL that skips the application and tries to break redemptions, refunds and the
per-type totals, as the application role and as the owner: PostgreSQL must refuse, by name.

Deferred checks fire at COMMIT, so each attempt runs in a transaction that commits.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg
import pytest

from loyalty.ledger import Ledger
from tests.integration.test_invariants_sql import denied, refused
from tests.integration.test_ledger import signup
from tests.integration.test_redemptions import redeem, refund


@pytest.fixture
def spent(ledger: Ledger) -> dict[str, Any]:
    """Alice: signed up (100), redeemed a 40-point reward (balance 60, revision 3)."""
    ledger.apply_signup(signup("alice"))
    ledger.apply_signup(signup("bob"))
    reward = ledger.create_reward(name="Mug", kind="custom", value=None, currency=None,
                                  cost_in_points=40)
    result = ledger.redeem_points(redeem("alice", "r-1", reward_id=reward["id"]))
    assert result["status"] == "applied"
    ledger.redeem_points(redeem("bob", "r-2", reward_id=reward["id"]))  # bob: the same
    return result


GIVE_BACK = ("UPDATE accounts SET balance = balance + %s, redeemed = redeemed - %s,"
             " revision = revision + 1 WHERE id = %s")
REFUND = ("INSERT INTO ledger_entries (account_id, type, amount, balance_after, idempotency_key,"
          " actor, refunds_entry_id, account_revision) VALUES (%s, 'REFUND', %s, %s, %s, 'm', %s,"
          " %s)")


def _refund(conn: psycopg.Connection, account: str, redeem_id: str | None, amount: int,
            balance_after: int, revision: int, *, mark: bool = True) -> None:
    """A REFUND written by hand: the account, the entry and (if `mark`) the redemption."""
    conn.execute(GIVE_BACK, (amount, amount, account))
    entry = conn.execute(REFUND, (account, amount, balance_after, f"raw-{amount}", redeem_id,
                                  revision)).rowcount
    assert entry == 1
    if mark:
        conn.execute("UPDATE redemptions SET status = 'REFUNDED', refunded_at = now(),"
                     " refund_entry_id = (SELECT id FROM ledger_entries WHERE idempotency_key"
                     " = %s) WHERE redeem_entry_id = %s", (f"raw-{amount}", redeem_id))


def _refused(conn: psycopg.Connection, *args: Any, **kwargs: Any) -> str | None:
    with pytest.raises(psycopg.errors.IntegrityError) as info, conn.transaction():
        _refund(conn, *args, **kwargs)
    return info.value.diag.constraint_name


def test_a_correct_raw_refund_commits(raw: psycopg.Connection, ledger: Ledger,
                                      spent: dict[str, Any]) -> None:
    """The control case: a consistent refund by hand is accepted, so the refusals mean something."""
    account = spent["account"]["id"]
    with raw.transaction():
        _refund(raw, account, spent["transaction_id"], 40, 100, 4)
    assert ledger.get_account(contact_id="alice")["points"]["redeemed"] == 0
    assert ledger.verify()["ok"]


@pytest.mark.parametrize("who", ["app", "owner"])
def test_a_refund_must_give_back_its_redeem_exactly_once(
        raw: psycopg.Connection, raw_owner: psycopg.Connection, ledger: Ledger,
        spent: dict[str, Any], who: str) -> None:
    conn = raw if who == "app" else raw_owner
    alice, redeem_id = spent["account"]["id"], spent["transaction_id"]
    earn_id = ledger.list_transactions(contact_id="alice", type_="EARN")["items"][0]["id"]
    bob = ledger.get_account(contact_id="bob")["id"]
    assert _refused(conn, alice, None, 40, 100, 4) == "ck_ledger_entries_refund_names_redeem"
    assert _refused(conn, alice, earn_id, 40, 100, 4) == "ledger_entries_refund_matches_redeem"
    assert _refused(conn, alice, redeem_id, 39, 99, 4) == "ledger_entries_refund_matches_redeem"
    assert _refused(conn, bob, redeem_id, 40, 100, 4) == "ledger_entries_refund_matches_redeem"
    # Shaped right, but the redemption is not told: refused at COMMIT.
    assert _refused(conn, alice, redeem_id, 40, 100, 4, mark=False) \
        == "ledger_entries_redemption_matches"
    ledger.refund_transaction(refund(redeem_id, "f-1"))
    ledger.redeem_points(redeem("alice", "r-3", amount=40))  # balance 60, revision 5
    assert _refused(conn, alice, redeem_id, 40, 100, 6, mark=False) \
        == "uq_ledger_entries_refunds_entry_id"
    assert ledger.get_account(contact_id="alice")["points"]["balance"] == 60
    assert ledger.verify()["ok"]


@pytest.mark.parametrize("who", ["app", "owner"])
def test_redemptions_match_their_redeem_entries(raw: psycopg.Connection,
                                                raw_owner: psycopg.Connection, ledger: Ledger,
                                                spent: dict[str, Any], who: str) -> None:
    conn = raw if who == "app" else raw_owner
    alice, redeem_id = spent["account"]["id"], spent["transaction_id"]
    take = ("UPDATE accounts SET balance = balance - 10, redeemed = redeemed + 10,"
            " revision = revision + 1 WHERE id = %s")
    entry = ("INSERT INTO ledger_entries (account_id, type, amount, balance_after,"
             " idempotency_key, actor, account_revision) VALUES (%s, 'REDEEM', -10, 50, 'raw',"
             " 'm', 4) RETURNING id")
    with pytest.raises(psycopg.errors.IntegrityError) as info, conn.transaction():
        conn.execute(take, (alice,))
        conn.execute(entry, (alice,))
    assert info.value.diag.constraint_name == "ledger_entries_redemption_matches"
    insert = ("INSERT INTO redemptions (account_id, points, count, code, request_id, actor,"
              " redeem_entry_id) VALUES (%s, %s, 1, %s, 'raw', 'm', %s)")
    for points, target in ((11, "new"), (10, "spent")):
        with pytest.raises(psycopg.errors.IntegrityError) as info, conn.transaction():
            conn.execute(take, (alice,))
            new_id = conn.execute(entry, (alice,)).fetchone()
            assert new_id is not None
            conn.execute(insert, (alice, points, "AAAA-BBBB-CCCC-DDDD",
                                  new_id[0] if target == "new" else redeem_id))
        assert info.value.diag.constraint_name == (
            "redemptions_match_entries" if target == "new" else "uq_redemptions_redeem_entry_id")
    with pytest.raises(psycopg.errors.IntegrityError) as info, conn.transaction():
        conn.execute(take, (alice,))
        new_id = conn.execute(entry, (alice,)).fetchone()
        assert new_id is not None
        conn.execute(insert, (alice, 10, "OOOO-1111-LLLL-IIII", new_id[0]))
    assert info.value.diag.constraint_name == "ck_redemptions_code_format"
    assert ledger.verify()["ok"]


def test_a_redemption_only_ever_becomes_refunded(raw: psycopg.Connection,
                                                 raw_owner: psycopg.Connection, ledger: Ledger,
                                                 spent: dict[str, Any]) -> None:
    code = spent["redemption"]["code"]
    # The application role may change a redemption's refund columns only ...
    assert "permission denied" in denied(raw, "UPDATE redemptions SET points = 1")
    assert "permission denied" in denied(raw, "DELETE FROM redemptions")
    # ... and not even those without its REFUND; the owner is held by a trigger too.
    assert refused(raw, "UPDATE redemptions SET status = 'REFUNDED', refunded_at = now(),"
                        " refund_entry_id = redeem_entry_id") == "redemptions_match_entries"
    for sql in ("UPDATE redemptions SET points = 1", "UPDATE redemptions SET code = %s",
                "DELETE FROM redemptions", "TRUNCATE redemptions"):
        params = ("2222-3333-4444-5555",) if "%s" in sql else ()
        assert refused(raw_owner, sql, params) == "redemptions_refund_only", sql
    ledger.refund_transaction(refund(spent["transaction_id"], "f-1"))
    assert refused(raw_owner, "UPDATE redemptions SET status = 'ISSUED', refund_entry_id = NULL,"
                              " refunded_at = NULL") == "redemptions_refund_only"
    assert ledger.get_redemption(code=code)["status"] == "REFUNDED"


@pytest.mark.parametrize("who", ["app", "owner"])
def test_per_type_totals_must_equal_the_ledger(raw: psycopg.Connection,
                                               raw_owner: psycopg.Connection, ledger: Ledger,
                                               spent: dict[str, Any], who: str) -> None:
    """The balance adds up and chains, but the points are booked under the wrong type."""
    conn = raw if who == "app" else raw_owner
    alice = spent["account"]["id"]
    adjust = ("INSERT INTO ledger_entries (account_id, type, amount, balance_after,"
              " idempotency_key, actor, balance_before, account_revision)"
              " VALUES (%s, 'ADJUST', 5, 65, 'raw', 'm', 60, 4)")
    for column in ("earned", "redeemed"):
        sign = "+" if column == "earned" else "-"
        with pytest.raises(psycopg.errors.IntegrityError) as info, conn.transaction():
            conn.execute(f"UPDATE accounts SET balance = balance + 5, {column} = {column} {sign} 5,"
                         " revision = revision + 1 WHERE id = %s", (alice,))
            conn.execute(adjust, (alice,))
        assert info.value.diag.constraint_name == "accounts_totals_match_ledger"
    # A shuffle with no entry at all: the revision moves, the ledger does not.
    with pytest.raises(psycopg.errors.IntegrityError) as info, conn.transaction():
        conn.execute("UPDATE accounts SET earned = earned + 5, adjusted = adjusted - 5,"
                     " revision = revision WHERE id = %s", (alice,))
    assert info.value.diag.constraint_name in ("accounts_revision_step",
                                               "accounts_totals_match_ledger")
    # A new account born with totals that cancel out.
    with pytest.raises(psycopg.errors.IntegrityError) as info, conn.transaction():
        conn.execute("INSERT INTO contacts (contact_id, profile_at) VALUES ('eve', now())")
        conn.execute("INSERT INTO accounts (contact_id, earned, adjusted) VALUES ('eve', 5, -5)")
    assert info.value.diag.constraint_name == "accounts_totals_match_ledger"
    assert ledger.verify()["ok"]


def test_the_database_keeps_the_totals(raw: psycopg.Connection, raw_owner: psycopg.Connection,
                                       ledger: Ledger, spent: dict[str, Any]) -> None:
    """The application may only read ledger_totals; the owner, who may write it, is caught
    by `verify` even when it bends the totals and the account together."""
    alice = spent["account"]["id"]
    assert raw.execute("SELECT earned, redeemed FROM ledger_totals WHERE account_id = %s",
                       (alice,)).fetchone() == (100, 40)
    assert "permission denied" in denied(raw, "UPDATE ledger_totals SET earned = 0")
    assert "permission denied" in denied(raw, "DELETE FROM ledger_totals")
    with raw_owner.transaction():
        raw_owner.execute("UPDATE ledger_totals SET earned = earned + 5, adjusted = adjusted - 5"
                          " WHERE account_id = %s", (alice,))
        raw_owner.execute("UPDATE accounts SET earned = earned + 5, adjusted = adjusted - 5,"
                          " revision = revision + 1 WHERE id = %s", (alice,))
        raw_owner.execute("INSERT INTO ledger_entries (account_id, type, amount, balance_after,"
                          " idempotency_key, actor, balance_before, account_revision)"
                          " VALUES (%s, 'ADJUST', 0, 60, 'raw', 'm', 60, 4)", (alice,))
    checks = {v["check"] for v in ledger.verify()["violations"]}
    assert checks == {"totals_equal_ledger", "ledger_totals_equal_ledger"}


@pytest.mark.parametrize(("values", "constraint"), [
    # A staff earn names an activity and an actor, and no rule or event.
    ("'EARN', 5, 65, 'earn:x', NULL, 'm', NULL, NULL, NULL", "ck_ledger_entries_earn_has_source"),
    ("'EARN', 5, 65, 'earn:x', 'review', 'm', 1, 1, NULL", "ck_ledger_entries_earn_has_source"),
    ("'EARN', 5, 65, 'earn:x', 'review', NULL, NULL, NULL, NULL",
     "ck_ledger_entries_earn_has_source"),
    ("'REDEEM', -5, 55, 'redeem:x', NULL, NULL, NULL, NULL, NULL",
     "ck_ledger_entries_staff_entry_has_actor"),
    ("'REDEEM', -5, 55, 'redeem:x', NULL, 'm', NULL, NULL, %s",
     "ck_ledger_entries_refund_names_redeem"),
])
def test_staff_entry_shapes(raw: psycopg.Connection, spent: dict[str, Any], values: str,
                            constraint: str) -> None:
    params: tuple[Any, ...] = (spent["account"]["id"],)
    if "%s" in values:
        params += (spent["transaction_id"],)
    assert refused(raw, "INSERT INTO ledger_entries (account_id, type, amount, balance_after,"
                        " idempotency_key, activity, actor, rule_id, rule_revision,"
                        f" refunds_entry_id, account_revision) VALUES (%s, {values}, 4)",
                   params) == constraint


@pytest.mark.parametrize(("sql", "constraint"), [
    ("INSERT INTO rewards (name, kind, value, cost_in_points) VALUES"
     " ('x', 'discount_percent', 150, 10)", "ck_rewards_kind_shape"),
    ("INSERT INTO rewards (name, kind, value, cost_in_points) VALUES"
     " ('x', 'discount_amount', 5, 10)", "ck_rewards_kind_shape"),
    ("INSERT INTO rewards (name, kind, cost_in_points) VALUES ('x', 'custom', 0)",
     "ck_rewards_cost_in_points_range"),
    ("INSERT INTO rewards (name, kind, cost_in_points, status) VALUES ('x', 'custom', 5, 'on')",
     "ck_rewards_status_known"),
    ("UPDATE rewards SET cost_in_points = 1", "rewards_revision_step"),
])
def test_reward_checks(raw: psycopg.Connection, ledger: Ledger, sql: str,
                       constraint: str) -> None:
    ledger.create_reward(name="Mug", kind="discount_amount", value=Decimal("3"), currency="EUR",
                         cost_in_points=40)
    assert refused(raw, sql) == constraint


def test_every_new_function_is_hardened(raw: psycopg.Connection) -> None:
    rows = dict(raw.execute(
        "SELECT p.proname, p.proconfig FROM pg_proc p JOIN pg_namespace n"
        " ON n.oid = p.pronamespace WHERE n.nspname = 'public'").fetchall())
    for name in ("loyalty_ledger_totals", "loyalty_ledger_refund_checks",
                 "loyalty_entry_has_redemption", "loyalty_redemption_matches_entries",
                 "loyalty_redemption_refund_only", "loyalty_balance_matches_ledger"):
        assert "search_path=pg_catalog, pg_temp" in rows[name], name


def test_verify_reports_redemption_damage_done_with_triggers_off(
        raw_super: psycopg.Connection, ledger: Ledger, spent: dict[str, Any]) -> None:
    """As a superuser with every trigger switched off, as a careless restore might."""
    back = ledger.refund_transaction(refund(spent["transaction_id"], "f-1"))
    other = ledger.redeem_points(redeem("alice", "r-3", amount=10))
    bob = ledger.list_redemptions(contact_id="bob", limit=1)["items"][0]
    assert ledger.verify()["ok"]
    raw_super.execute("SET session_replication_role = replica")
    raw_super.execute("UPDATE redemptions SET status = 'ISSUED', refund_entry_id = NULL,"
                      " refunded_at = NULL WHERE id = %s", (back["redemption"]["id"],))
    raw_super.execute("DELETE FROM redemptions WHERE id = %s", (other["redemption"]["id"],))
    raw_super.execute("UPDATE redemptions SET points = points + 1 WHERE id = %s", (bob["id"],))
    raw_super.execute("UPDATE ledger_entries SET amount = amount - 1 WHERE id = %s",
                      (back["transaction_id"],))
    checks = {v["check"] for v in ledger.verify()["violations"]}
    assert {"redemption_refund_matches", "redeem_has_redemption", "redemption_matches_entry",
            "refund_matches_redeem", "totals_equal_ledger"} <= checks, checks
