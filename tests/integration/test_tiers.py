"""Tiers: tier points over the rolling window, recomputed with every entry that changes
them and by the periodic job as the window slides; definitions checked by PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from loyalty.errors import InvalidTier, TierError
from loyalty.ledger import Ledger
from tests.integration.test_invariants_sql import denied, refused
from tests.integration.test_ledger import adjust, order, signup
from tests.integration.test_redemptions import create, redeem
from tests.integration.test_redemptions import refund as refund_redemption
from tests.integration.test_refunds_activities import activity, refund

NOW = datetime.now(UTC)


def tier(ledger: Ledger, contact: str = "c1") -> tuple[str | None, int | None]:
    shown = ledger.get_account(contact_id=contact)["tier"]
    return (shown["name"], shown["points"]) if shown else (None, None)


def test_cross_into_a_tier_and_fall_back(ledger: Ledger) -> None:
    ledger.set_program(tiers_status="ACTIVE", rolling_window_months=3)
    ledger.create_tier(name="Silver", required_points=100)
    gold = ledger.create_tier(name="Gold", required_points=300, description="the best")
    assert gold["revision"] == 1 and gold["description"] == "the best"
    ledger.apply_signup(signup("c1"))
    assert tier(ledger) == ("Silver", 100)  # in the transaction of the EARN
    ledger.apply_order(order("c1", "A", "250"))
    assert tier(ledger) == ("Gold", 350)
    # Redeeming does not lower tier points; a refund's REVERSE does.
    spent = ledger.redeem_points(redeem("c1", "r-1", amount=300))
    assert tier(ledger) == ("Gold", 350)
    # 100 of the order's 250 refunded: 100 due, but the balance had 50 to give back.
    ledger.apply_refund(refund("c1", "A", "f-1", "100"))
    assert tier(ledger) == ("Gold", 300)
    # The redemption refunded (a REFUND is not tier points), then 50 more of the order:
    # 150 of 250 refunded, 150 points reversed in all.
    ledger.refund_transaction(refund_redemption(spent["transaction_id"], "rf-1"))
    assert tier(ledger) == ("Gold", 300)
    ledger.apply_refund(refund("c1", "A", "f-2", "50"))
    assert tier(ledger) == ("Silver", 200)
    balance = ledger.get_account(contact_id="c1")["points"]["balance"]
    assert ledger.totals()["tiers"] == [
        {"id": ledger.list_tiers()["items"][0]["id"], "name": "Silver", "accounts": 1,
         "balance": balance}, {"id": gold["id"], "name": "Gold", "accounts": 0, "balance": 0}]
    report = ledger.recalculate_tiers(datetime.now(UTC) + timedelta(minutes=1))
    assert (report["accounts"], report["changed"]) == (1, 0)  # nothing moved
    # Four months on, the window holds nothing: back to the base level.
    later = ledger.recalculate_tiers(NOW + timedelta(days=120))
    assert later["changed"] == 1
    assert ledger.get_account(contact_id="c1")["tier"] is None
    assert ledger.recalculate_tiers(NOW + timedelta(days=120))["changed"] == 0
    assert [(t["name"], t["accounts"]) for t in ledger.totals()["tiers"]] == [
        ("Silver", 0), ("Gold", 0)]
    assert ledger.verify()["ok"]


def test_paused_and_disabled_keep_tiers_still(ledger: Ledger) -> None:
    ledger.create_tier(name="Silver", required_points=100)
    ledger.apply_signup(signup("c1"))
    assert ledger.get_account(contact_id="c1")["tier"] is None  # DISABLED by default
    ledger.set_program(tiers_status="ACTIVE")
    assert ledger.recalculate_tiers(datetime.now(UTC))["changed"] == 1
    assert tier(ledger) == ("Silver", 100)
    ledger.set_program(tiers_status="PAUSED")
    assert ledger.recalculate_tiers(NOW + timedelta(days=500))["accounts"] == 0
    assert tier(ledger) == ("Silver", 100)


def test_definitions(ledger: Ledger, raw: psycopg.Connection,
                     raw_owner: psycopg.Connection) -> None:
    silver = ledger.create_tier(name="Silver", required_points=100)
    with pytest.raises(InvalidTier, match="name must be 1 to 50"):
        ledger.create_tier(name="x" * 51, required_points=5)
    with pytest.raises(InvalidTier, match="required_points must be 1 to 9999999"):
        ledger.create_tier(name="Huge", required_points=10_000_000)
    with pytest.raises(TierError, match="another tier requires the same points"):
        ledger.create_tier(name="Other", required_points=100)
    renamed = ledger.update_tier(silver["id"], expected_revision=1, name="Argent")
    assert (renamed["name"], renamed["revision"]) == ("Argent", 2)
    with pytest.raises(TierError, match="at revision 2, not 1"):
        ledger.update_tier(silver["id"], expected_revision=1, name="Silver")
    for n in range(19):
        ledger.create_tier(name=f"T{n}", required_points=1000 + n)
    with pytest.raises(TierError, match="at most 20 tiers"):
        ledger.create_tier(name="T21", required_points=5000)
    assert refused(raw, "INSERT INTO tiers (name, required_points) VALUES ('x', 6000)") \
        == "tiers_at_most_20"
    assert ledger.delete_tier(silver["id"])["name"] == "Argent"
    assert len(ledger.list_tiers()["items"]) == 19
    assert refused(raw, "INSERT INTO tiers (name, required_points) VALUES ('', 6000)") \
        == "ck_tiers_name_length"
    # Account tiers are the recalculation's alone.
    assert "permission denied" in denied(raw, "DELETE FROM account_tiers")


def test_a_reward_costs_the_tier_price(ledger: Ledger, raw: psycopg.Connection) -> None:
    ledger.set_program(tiers_status="ACTIVE")
    gold = ledger.create_tier(name="Gold", required_points=150)
    mug = ledger.create_reward(name="Mug", kind="custom", value=None, currency=None,
                               cost_in_points=50, tier_costs={gold["id"]: 30})
    assert mug["tier_costs"] == {str(gold["id"]): 30}
    ledger.apply_signup(signup("c1"))
    ledger.apply_order(order("c1", "A", "60"))  # 160 tier points: Gold
    ledger.apply_signup(signup("c2"))  # 100: the base level
    gold_buy = ledger.redeem_points(redeem("c1", "r-1", reward_id=mug["id"], count=2))
    base_buy = ledger.redeem_points(redeem("c2", "r-2", reward_id=mug["id"], count=2))
    assert (gold_buy["redemption"]["points"], base_buy["redemption"]["points"]) == (60, 100)
    with pytest.raises(Exception, match="a tier cost is a tier id and 1 to"):
        ledger.update_reward(mug["id"], tier_costs={gold["id"]: 0})
    assert refused(raw, "UPDATE rewards SET tier_costs = '[]', revision = revision + 1") \
        == "ck_rewards_tier_costs_object"
    assert ledger.verify()["ok"]


def test_a_rule_earns_the_tier_rate(ledger: Ledger, raw: psycopg.Connection) -> None:
    """The default order rule gives 1 point per 1 USD; at Gold it gives 2."""
    ledger.set_program(tiers_status="ACTIVE")
    gold = ledger.create_tier(name="Gold", required_points=150)
    rule = next(r for r in ledger.list_rules()["items"] if r["trigger"] == "order.completed")
    changed = ledger.update_rule(rule["id"], tier_points={gold["id"]: 2 * rule["points"]})
    assert changed["tier_points"] == {str(gold["id"]): 2 * rule["points"]}
    assert changed["revision"] == rule["revision"] + 1
    ledger.apply_signup(signup("c1"))
    first = ledger.apply_order(order("c1", "A", "60"))  # base level: 60, now Gold (160)
    second = ledger.apply_order(order("c1", "B", "10"))  # at Gold: 20
    assert (first.points, second.points) == (60, 20)
    earn = next(e for e in ledger.list_transactions(contact_id="c1", type_="EARN")["items"]
                if e["source"]["order_id"] == "B")
    assert raw.execute("SELECT tier_id FROM ledger_entries WHERE id = %s",
                       (earn["id"],)).fetchone()[0] == gold["id"]
    raw.rollback()
    with pytest.raises(Exception, match="points"):
        ledger.update_rule(rule["id"], tier_points={gold["id"]: 0})
    assert ledger.verify()["violations"] == []


def test_signup_and_activity_rules_earn_the_tier_points(
        ledger: Ledger, raw: psycopg.Connection) -> None:
    """The account's tier when it earns prices a signup or activity rule with per-tier
    points; verify recomputes the EARN at the tier it names."""
    ledger.set_program(tiers_status="ACTIVE")
    silver = ledger.create_tier(name="Silver", required_points=100)
    gold = ledger.create_tier(name="Gold", required_points=200)
    bonus = next(r for r in ledger.list_rules()["items"] if r["trigger"] == "signup")
    ledger.update_rule(bonus["id"], tier_points={gold["id"]: 500})
    ledger.create_rule(name="Reviews", trigger="activity", kind="fixed", points=25,
                       money_amount=None, currency=None, activity="review",
                       tier_points={silver["id"]: 40})
    first = ledger.apply_signup(signup("c1"))  # base level: the rule's own 100, now Silver
    review = ledger.apply_activity(activity("c1", "review", "p-1"))  # at Silver: 40
    assert (first.points, review.points) == (bonus["points"], 40)
    # An account opened by staff and lifted to Gold before its signup event.
    ledger.create_account(create("c2"))
    ledger.adjust_points(adjust("c2", "lift", amount=250))
    assert tier(ledger, "c2") == ("Gold", 250)
    late = ledger.apply_signup(signup("c2"))
    other = ledger.apply_activity(activity("c2", "review", "p-1"))  # Gold: no tier points
    assert (late.points, other.points) == (500, 25)
    tiers_of = dict(raw.execute(
        "SELECT event_id, tier_id FROM ledger_entries WHERE type = 'EARN'").fetchall())
    raw.rollback()
    assert tiers_of == {"signup-c1": None, "act-c1-review-p-1": silver["id"],
                        "signup-c2": gold["id"], "act-c2-review-p-1": None}
    assert ledger.verify()["violations"] == []
