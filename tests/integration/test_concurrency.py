"""Many writers, one account, separate connections: the ledger must still add up."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from loyalty import db
from loyalty.ledger import Ledger
from tests.integration.test_ledger import adjust, order, signup


def _many(n: int, fn, items):  # type: ignore[no-untyped-def]
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(fn, items))


def test_concurrent_earns_and_adjusts_on_one_account(db_url: str) -> None:
    ledger = Ledger(db.get_engine(db_url, pool_size=8))
    ledger.apply_signup(signup("hot"))
    orders = [order("hot", f"o{i}", "3.00") for i in range(120)]
    adjusts = [adjust("hot", f"r{i}", amount=-1) for i in range(60)]
    work = [*orders, *adjusts]
    results = _many(8, lambda m: ledger.apply_order(m) if hasattr(m, "order_id")
                    else ledger.adjust_points(m), work)
    assert sum(1 for r in results if isinstance(r, dict) and r["status"] == "applied") == 60
    account = ledger.get_account(contact_id="hot")
    assert account["points"]["balance"] == 100 + 120 * 3 - 60
    assert account["revision"] == 1 + 1 + 120 + 60
    assert ledger.verify()["ok"]


def test_same_event_delivered_concurrently_applies_once(db_url: str) -> None:
    ledger = Ledger(db.get_engine(db_url, pool_size=8))
    ledger.apply_signup(signup("c1"))
    outcomes = _many(8, ledger.apply_order, [order("c1", "A", "10")] * 16)
    assert sum(not o.duplicate for o in outcomes) == 1
    assert len({o.ledger_entry_id for o in outcomes}) == 1
    resent = _many(8, ledger.apply_order,
                   [order("c1", "B", "10", event_id=f"b{i}") for i in range(16)])
    assert sum(o.outcome == "earned" for o in resent) == 1
    assert ledger.get_account(contact_id="c1")["points"]["balance"] == 120


def test_concurrent_first_signups_create_one_account(db_url: str) -> None:
    ledger = Ledger(db.get_engine(db_url, pool_size=8))
    outcomes = _many(8, ledger.apply_signup,
                     [signup("new", event_id=f"s{i}") for i in range(16)])
    assert sum(o.outcome == "earned" for o in outcomes) == 1
    assert len({o.account_id for o in outcomes}) == 1
    assert ledger.totals()["accounts"] == 1


def test_same_revision_adjusts_apply_exactly_once(db_url: str) -> None:
    ledger = Ledger(db.get_engine(db_url, pool_size=8))
    ledger.apply_signup(signup("c1"))
    revision = ledger.get_account(contact_id="c1")["revision"]
    results = _many(8, ledger.adjust_points,
                    [adjust("c1", f"r{i}", amount=10, revision=revision) for i in range(16)])
    statuses = sorted(r.get("reason") or r["status"] for r in results)
    assert statuses == ["applied"] + ["revision_mismatch"] * 15
    assert ledger.get_account(contact_id="c1")["points"]["balance"] == 110


def test_sixteen_concurrent_redemptions_apply_exactly_the_affordable_ones(db_url: str) -> None:
    """The issue's test: 16 redemptions of 15 points at once on an account of 100. Each
    runs in its own connection; exactly six are affordable, and exactly six apply."""
    from tests.integration.test_redemptions import redeem

    ledger = Ledger(db.get_engine(db_url, pool_size=16))
    ledger.apply_signup(signup("hot"))
    reward = ledger.create_reward(name="Coffee", kind="custom", value=None, currency=None,
                                  cost_in_points=15)
    start = threading.Barrier(16)

    def at_once(request_id: str) -> dict:  # type: ignore[type-arg]
        start.wait(30)
        return ledger.redeem_points(redeem("hot", request_id, reward_id=reward["id"]))

    results = _many(16, at_once, [f"r{i}" for i in range(16)])
    statuses = sorted(r.get("reason") or r["status"] for r in results)
    assert statuses == ["applied"] * 6 + ["insufficient_balance"] * 10
    balances = [r["account"]["points"]["balance"] for r in results if r["status"] == "applied"]
    assert sorted(balances) == [10, 25, 40, 55, 70, 85]  # one after another, never below zero
    account = ledger.get_account(contact_id="hot")
    assert account["points"] == {"balance": 10, "earned": 100, "adjusted": 0, "redeemed": 90,
                                 "expired": 0, "reversed": 0, "pending": 0}
    codes = {r["redemption"]["code"] for r in results if r["status"] == "applied"}
    assert len(codes) == 6
    assert ledger.verify()["ok"]


def test_one_redeem_refunded_concurrently_is_refunded_once(db_url: str) -> None:
    from tests.integration.test_redemptions import redeem, refund

    ledger = Ledger(db.get_engine(db_url, pool_size=8))
    ledger.apply_signup(signup("hot"))
    spent = ledger.redeem_points(redeem("hot", "r-1", amount=60))
    refunds = _many(8, ledger.refund_transaction,
                    [refund(spent["transaction_id"], f"f{i}") for i in range(16)])
    statuses = sorted(r.get("reason") or r["status"] for r in refunds)
    assert statuses == ["already_refunded"] * 15 + ["applied"]
    # The same request, delivered 8 times at once: one REDEEM, one result.
    again = _many(8, ledger.redeem_points, [redeem("hot", "r-2", amount=10)] * 8)
    assert len({r["transaction_id"] for r in again}) == 1
    assert ledger.get_account(contact_id="hot")["points"]["balance"] == 90
    assert ledger.verify()["ok"]
