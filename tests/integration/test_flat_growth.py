"""Migration 0013 (issue 14): what made a write cost more as the ledger grew is gone, and
every guarantee it touched still holds, whoever writes."""

from __future__ import annotations

import uuid

import psycopg

from loyalty.ledger import Ledger
from tests.integration.test_invariants_sql import denied, refused
from tests.integration.test_ledger import adjust, order, signup
from tests.integration.test_redemptions import redeem
from tests.integration.test_redemptions import refund as refund_redemption


def kept(raw: psycopg.Connection, contact: str) -> tuple[int, int]:
    row = raw.execute("SELECT t.available, t.pending FROM lot_totals t"
                      " JOIN accounts a ON a.id = t.account_id WHERE a.contact_id = %s",
                      (contact,)).fetchone()
    raw.rollback()
    assert row is not None
    return row[0], row[1]


def test_lot_totals_follow_every_write(ledger: Ledger, raw: psycopg.Connection) -> None:
    """Credits, a redemption (which uses lots up), an adjustment down and a refund of the
    redemption: the kept total is the balance throughout, and `verify` sums the lots."""
    ledger.apply_signup(signup("c1"))
    ledger.apply_order(order("c1", "A", "50"))
    assert kept(raw, "c1") == (150, 0)
    spent = ledger.redeem_points(redeem("c1", "r-1", amount=120))
    assert kept(raw, "c1") == (30, 0)
    ledger.adjust_points(adjust("c1", "a-1", amount=-5))
    ledger.refund_transaction(refund_redemption(spent["transaction_id"], "rf-1"))
    assert kept(raw, "c1") == (145, 0)
    assert ledger.get_account(contact_id="c1")["points"]["balance"] == 145
    assert ledger.verify()["ok"]


def test_lot_totals_are_written_by_the_database_only(ledger: Ledger, raw: psycopg.Connection,
                                                     raw_owner: psycopg.Connection) -> None:
    ledger.apply_signup(signup("c1"))
    assert "permission denied" in denied(raw, "UPDATE lot_totals SET available = 0")
    assert "permission denied" in denied(raw, "DELETE FROM lot_totals")
    assert "permission denied" in denied(
        raw, "INSERT INTO lot_totals (account_id) SELECT gen_random_uuid()")
    # What the application may change of a lot still moves the kept total, so the
    # COMMIT check refuses it by name.
    assert refused(raw, "UPDATE point_lots SET remaining = 0") == "point_lots_match_balance"
    # The owner may write the row; the COMMIT check (lots against balance) and the range
    # check still hold it.
    assert refused(raw_owner, "UPDATE lot_totals SET available = available - 1") \
        == "point_lots_match_balance"
    assert refused(raw_owner, "UPDATE lot_totals SET pending = -1") \
        == "ck_lot_totals_not_negative"


def test_verify_finds_kept_lot_totals_that_disagree(ledger: Ledger,
                                                    raw_super: psycopg.Connection) -> None:
    """With triggers off, a kept total and the balance changed together: only summing the
    lots themselves shows it."""
    ledger.apply_signup(signup("c1"))
    with raw_super.transaction():
        raw_super.execute("SET LOCAL session_replication_role = replica")
        raw_super.execute("UPDATE lot_totals SET pending = pending + 7")
    checks = [v["check"] for v in ledger.verify()["violations"]]
    assert checks == ["lot_totals_equal_lots"]


def test_new_ids_are_time_ordered(ledger: Ledger, raw: psycopg.Connection) -> None:
    """Entries written by the database's default (a staff adjustment) and outbox events
    get UUIDv7 ids, increasing with time, so each lands on the right of its key."""
    ledger.apply_signup(signup("c1"))
    ledger.adjust_points(adjust("c1", "a-1", amount=5))
    ledger.adjust_points(adjust("c1", "a-2", amount=5))
    entries = [uuid.UUID(str(r[0])) for r in raw.execute(
        "SELECT id FROM ledger_entries WHERE type = 'ADJUST' ORDER BY seq").fetchall()]
    events = [uuid.UUID(str(r[0])) for r in raw.execute(
        "SELECT id FROM outbox_events ORDER BY position").fetchall()]
    raw.rollback()
    for ids in (entries, events):
        assert len(ids) >= 2
        assert {i.version for i in ids} == {7}
        # Ordered by their millisecond (random bits order ids made within one).
        assert [i.int >> 80 for i in ids] == sorted(i.int >> 80 for i in ids)


def test_trigger_functions_never_plan_a_sequential_scan(raw: psycopg.Connection) -> None:
    """A plan cached while a table was nearly empty would scan it whole for every batch
    afterwards: the functions that look rows up by key rule that plan out."""
    rows = dict(raw.execute(
        "SELECT p.proname, array_to_string(p.proconfig, ',') FROM pg_proc p"
        " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'"
        " AND p.proname IN ('loyalty_ledger_statement_checks', 'loyalty_ledger_lots',"
        " 'loyalty_balance_matches_ledger', 'loyalty_lots_match_balance',"
        " 'loyalty_ledger_totals', 'loyalty_lot_totals')").fetchall())
    raw.rollback()
    assert len(rows) == 6
    for name, config in rows.items():
        assert "enable_seqscan=off" in config, name
        assert "search_path=pg_catalog, pg_temp" in config, name


def test_refunds_entry_id_stays_unique(ledger: Ledger, raw_owner: psycopg.Connection) -> None:
    """The index is partial now (only REFUNDs have the column); a second REFUND of one
    REDEEM is still refused by it."""
    ledger.apply_signup(signup("c1"))
    spent = ledger.redeem_points(redeem("c1", "r-1", amount=10))
    ledger.refund_transaction(refund_redemption(spent["transaction_id"], "rf-1"))
    second = (
        "INSERT INTO ledger_entries (account_id, type, amount, balance_after, idempotency_key,"
        " actor, account_revision, refunds_entry_id)"
        " SELECT a.id, 'REFUND', 10, a.balance + 10, 'again', 'm', a.revision + 1, %s"
        " FROM accounts a")
    assert refused(raw_owner, second, (spent["transaction_id"],)) \
        == "uq_ledger_entries_refunds_entry_id"
