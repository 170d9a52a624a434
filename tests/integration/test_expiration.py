"""Expiration in both modes, with `as_of` moving the clock: what is due expires once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

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


def _warnings(raw: psycopg.Connection) -> list[tuple[str, int, str]]:
    rows = raw.execute(
        "SELECT a.contact_id, (o.data ->> 'expiring_points')::bigint, o.data ->> 'expiration_date'"
        " FROM outbox_events o JOIN accounts a ON a.id = o.account_id"
        " WHERE o.type = 'points.expiring_soon' ORDER BY o.position").fetchall()
    raw.rollback()
    return [(c, p, d) for c, p, d in rows]


def test_lots_warn_once_days_before_they_expire(ledger: Ledger, raw: psycopg.Connection) -> None:
    from loyalty.notifications.events import envelope
    from schemas.notifications import EVENTS

    ledger.set_program(expiration_mode="lots", expiration_months=6)
    ledger.apply_signup(signup("c1"))
    ledger.apply_order(order("c1", "A", "50"))
    expires = datetime.fromisoformat(
        ledger.get_account(contact_id="c1")["points_expiration"]["expiration_date"])
    # Eight days before: nothing yet (7 days by default).
    early = ledger.expire_points(expires - timedelta(days=8))
    assert early["expiring_soon"] == 0 and _warnings(raw) == []
    # Six days before: one warning per lot, once.
    soon = ledger.expire_points(expires - timedelta(days=6))
    assert (soon["expiring_soon"], soon["entries"]) == (2, 0)
    assert sorted(p for _c, p, _d in _warnings(raw)) == [50, 100]
    assert ledger.expire_points(expires - timedelta(days=6))["expiring_soon"] == 0
    assert ledger.expire_points(expires - timedelta(days=1))["expiring_soon"] == 0
    assert len(_warnings(raw)) == 2
    for event in ledger.outbox_events():
        if event.type == "points.expiring_soon":
            EVENTS[event.type].model_validate(envelope(event))
            assert abs(datetime.fromisoformat(event.data["expiration_date"]) - expires) \
                < timedelta(days=1)
    # A wider horizon warns of nothing more; the points then expire once.
    wide = Ledger(ledger.engine, expiring_soon_days=30)
    assert wide.expire_points(expires - timedelta(days=6))["expiring_soon"] == 0
    done = ledger.expire_points(expires + timedelta(days=1))
    assert (done["entries"], done["expiring_soon"]) == (2, 0)
    assert ledger.verify()["ok"]
    # The application cannot record a warning (and so forge its event) by itself.
    account = ledger.get_account(contact_id="c1")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        raw.execute("INSERT INTO expiry_warnings (key, account_id, expiration_date,"
                    " expiring_points) VALUES ('lot:0', %s, now(), 1)", (account["id"],))
    raw.rollback()
    with pytest.raises(psycopg.errors.CheckViolation) as refused:
        raw.execute("SELECT loyalty_warn_expiring(now(), 0)")
    assert refused.value.diag.constraint_name == "expiry_warnings_days_range"
    raw.rollback()


def test_inactivity_warns_once_per_quiet_period(ledger: Ledger, raw: psycopg.Connection) -> None:
    ledger.set_program(expiration_mode="inactivity", expiration_months=3,
                       expiration_percentage=50)
    ledger.apply_signup(signup("c1"))
    ledger.apply_signup(signup("c2"))
    expires = datetime.fromisoformat(
        ledger.get_account(contact_id="c2")["points_expiration"]["expiration_date"])
    assert ledger.expire_points(expires - timedelta(days=20))["expiring_soon"] == 0
    soon = ledger.expire_points(expires - timedelta(days=2))
    assert soon["expiring_soon"] == 2
    assert sorted((c, p) for c, p, _d in _warnings(raw)) == [("c1", 50), ("c2", 50)]
    assert ledger.expire_points(expires - timedelta(days=2))["expiring_soon"] == 0
    # Activity starts a new quiet period: c1 is warned again, of half its new balance.
    ledger.apply_order(order("c1", "A", "10"))
    assert ledger.expire_points(expires - timedelta(days=1))["expiring_soon"] == 1
    assert [(c, p) for c, p, _d in _warnings(raw)][-1] == ("c1", 55)
    done = ledger.expire_points(expires + timedelta(days=1))
    assert (done["entries"], done["expiring_soon"]) == (2, 0)
    assert len(_warnings(raw)) == 3
    assert ledger.verify()["ok"]
