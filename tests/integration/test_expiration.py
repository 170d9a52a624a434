"""Expiration in both modes, with `as_of` moving the clock: what is due expires once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from loyalty.ledger import Ledger
from tests.integration.test_ledger import order, signup
from tests.integration.test_point_lots import lots
from tests.integration.test_redemptions import redeem

NOW = datetime.now(UTC)


def test_lots_expire_each_once(ledger: Ledger, raw: psycopg.Connection) -> None:
    ledger.set_program(expiration_mode="lots", expiration_months=6)
    ledger.apply_signup(signup("c1"))
    ledger.apply_order(order("c1", "A", "50"))
    ledger.redeem_points(redeem("c1", "r-1", amount=30))  # the signup's lot keeps 70
    ledger.apply_signup(signup("c2"))
    account = ledger.get_account(contact_id="c1")
    due = account["points_expiration"]
    assert due["expiring_points"] == 120  # both lots became available today
    months_on = datetime.fromisoformat(due["expiration_date"]) - NOW
    assert timedelta(days=180) < months_on < timedelta(days=185)  # six months on
    assert ledger.expire_points(NOW + timedelta(days=100))["entries"] == 0
    done = ledger.expire_points(NOW + timedelta(days=200))
    assert (done["accounts"], done["entries"], done["points"]) == (2, 3, 220)
    again = ledger.expire_points(NOW + timedelta(days=200))
    assert (again["entries"], again["points"]) == (0, 0)
    assert lots(raw, "c1") == [("EARN", 100, 0), ("EARN", 50, 0)]
    account = ledger.get_account(contact_id="c1")
    assert account["points"]["balance"] == 0 and account["points"]["expired"] == 120
    assert account["points_expiration"] is None
    expired = ledger.list_transactions(contact_id="c1", type_="EXPIRE")["items"]
    assert sorted(e["amount"] for e in expired) == [-70, -50]
    assert ledger.verify()["ok"]


def test_inactivity_expires_a_share_once_per_quiet_period(ledger: Ledger) -> None:
    ledger.set_program(expiration_mode="inactivity", expiration_months=3,
                       expiration_percentage=25)
    ledger.apply_signup(signup("c1"))
    ledger.apply_order(order("c1", "A", "1"))  # balance 101
    shown = ledger.get_account(contact_id="c1")["points_expiration"]
    assert shown["expiring_points"] == 25
    assert ledger.expire_points(NOW + timedelta(days=60))["entries"] == 0
    done = ledger.expire_points(NOW + timedelta(days=100))
    assert (done["mode"], done["entries"], done["points"]) == ("inactivity", 1, 25)
    # The same moment, or a later one without activity in between: nothing more.
    assert ledger.expire_points(NOW + timedelta(days=100))["entries"] == 0
    assert ledger.expire_points(NOW + timedelta(days=400))["entries"] == 0
    account = ledger.get_account(contact_id="c1")
    assert (account["points"]["balance"], account["points"]["expired"]) == (76, 25)
    # New activity starts a new period.
    ledger.apply_order(order("c1", "B", "4"))  # balance 80
    assert ledger.expire_points(NOW + timedelta(days=200))["points"] == 20
    assert ledger.verify()["ok"]


def test_off_expires_nothing(ledger: Ledger) -> None:
    ledger.apply_signup(signup("c1"))
    assert ledger.get_account(contact_id="c1")["points_expiration"] is None
    assert ledger.expire_points(NOW + timedelta(days=4000))["entries"] == 0
