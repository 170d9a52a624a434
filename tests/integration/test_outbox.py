"""The outbox on a real PostgreSQL: written by triggers with the change, nothing for a
rollback, per-account order across relays, the rights of the application role."""

from __future__ import annotations

import threading

import psycopg
import pytest

from loyalty import db
from loyalty.ledger import Ledger
from loyalty.ledger import outbox as outbox_sql
from loyalty.ledger import webhooks as webhook_sql
from loyalty.ledger.outbox import OutboxEvent
from loyalty.notifications.events import body, envelope
from schemas.notifications import EVENTS
from tests.integration.test_ledger import adjust, order, signup


class RolledBack(Exception):
    pass


def events_of(ledger: Ledger) -> list[OutboxEvent]:
    return ledger.outbox_events()


def test_signup_order_and_adjustment_write_events_in_order(ledger: Ledger) -> None:
    ledger.apply_events([signup("c1"), signup("c2"), order("c1", "A", "49.90")])
    ledger.adjust_points(adjust("c1", "r1", amount=-10))
    found = events_of(ledger)
    c1 = [e for e in found if e.contact_id == "c1"]
    assert [(e.type, e.account_revision) for e in c1] == [
        ("account.created", 1), ("account.points_updated", 2), ("account.points_updated", 3),
        ("account.points_updated", 4)]
    assert [(e.data["type"], e.data["amount"], e.data["balance_after"]) for e in c1[1:]] == [
        ("EARN", 100, 100), ("EARN", 49, 149), ("ADJUST", -10, 139)]
    assert c1[2].data["order_id"] == "A" and c1[2].data["event_id"] == "order-A"
    entries = ledger.list_transactions(contact_id="c1")["items"]
    assert {str(e["id"]) for e in entries} == {e.data["transaction_id"] for e in c1[1:]}
    assert len({e.id for e in found}) == len(found) == 6  # c2: created and its signup EARN
    # Every event matches its published JSON Schema.
    for event in found:
        EVENTS[event.type].model_validate(envelope(event))


def test_no_event_for_a_change_that_rolled_back(ledger: Ledger, raw: psycopg.Connection) -> None:
    ledger.apply_events([signup("c1")])
    before = len(events_of(ledger))
    account = ledger.get_account(contact_id="c1")
    with pytest.raises(RolledBack), raw.transaction():
        raw.execute("UPDATE accounts SET balance = balance + 5, adjusted = adjusted + 5,"
                    " revision = revision + 1 WHERE id = %s", (account["id"],))
        raw.execute("""INSERT INTO ledger_entries (account_id, type, amount, balance_after,
                               idempotency_key, actor, balance_before, account_revision)
                           VALUES (%s, 'ADJUST', 5, 105, 'k1', 'ops', 100, 3)""",
                    (account["id"],))
        assert raw.execute("SELECT count(*) FROM outbox_events").fetchone()[0] == before + 1
        raise RolledBack  # e.g. a later statement of the same change failed
    assert len(events_of(ledger)) == before


def test_the_application_cannot_forge_or_drop_undelivered_events(
        ledger: Ledger, raw: psycopg.Connection) -> None:
    ledger.apply_events([signup("c1")])
    account = ledger.get_account(contact_id="c1")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        raw.execute("INSERT INTO outbox_events (type, account_id, contact_id, account_revision,"
                    " data) VALUES ('account.created', %s, 'c1', 1, '{}')", (account["id"],))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        raw.execute("UPDATE outbox_events SET data = '{}'")
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation) as refused:
        raw.execute("DELETE FROM outbox_events")
    assert refused.value.diag.constraint_name == "outbox_events_prune_delivered_only"
    # Delivered and past the retention: pruned, set-based.
    raw.execute("UPDATE outbox_events SET delivered_at = now() - interval '2 hours'")
    assert ledger.prune_outbox(3600, limit=1) == {"outbox_events": 2, "webhook_deliveries": 0}
    assert events_of(ledger) == []


def test_an_account_is_relayed_by_one_relay_at_a_time_in_order(db_url: str,
                                                              ledger: Ledger) -> None:
    ledger.apply_events([signup("a"), signup("b")])
    engine = db.get_engine(db_url)
    with engine.begin() as first:
        taken = outbox_sql.take(first, 100)
        assert {e.contact_id for e in taken} == {"a", "b"}
        # A change committed while the first relay holds the accounts: it is not a head,
        # so a second relay takes nothing of a or b, only c.
        ledger.apply_events([order("a", "o1", "10.00"), signup("c")])
        with engine.begin() as second:
            assert {e.contact_id for e in outbox_sql.take(second, 100)} == {"c"}
        outbox_sql.mark_delivered(first, [e.id for e in taken])
    with engine.begin() as third:
        later = outbox_sql.take(third, 100)
    assert [(e.contact_id, e.type) for e in later if e.contact_id == "a"] == [
        ("a", "account.points_updated")]


def test_a_limit_cuts_an_account_after_its_first_events(db_url: str, ledger: Ledger) -> None:
    ledger.apply_events([signup("a"), order("a", "o1", "10.00"), order("a", "o2", "20.00")])
    engine = db.get_engine(db_url)
    seen: list[int] = []
    while True:
        with engine.begin() as conn:
            taken = outbox_sql.take(conn, 2)
            if not taken:
                break
            seen += [e.account_revision for e in taken]
            outbox_sql.mark_delivered(conn, [e.id for e in taken])
    assert seen == [1, 2, 3, 4]


def test_concurrent_relays_never_reorder_an_account(db_url: str, ledger: Ledger) -> None:
    """Four relays drain a stream written while they run; each account's events come out
    in revision order and each exactly once."""
    delivered: list[tuple[str, int]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def deliver(events: list[OutboxEvent]) -> list[str]:
        with lock:
            delivered.extend((e.contact_id, e.account_revision) for e in events)
        return [body(e) for e in events]

    def relay() -> None:
        mine = Ledger(db.get_engine(db_url))
        while not stop.is_set() or mine.operations_state()["outbox"]["undelivered"]:
            if not mine.relay_events(7, deliver):
                stop.wait(0.01)

    threads = [threading.Thread(target=relay) for _ in range(4)]
    for t in threads:
        t.start()
    contacts = [f"k{i}" for i in range(8)]
    ledger.apply_events([signup(c) for c in contacts])
    for n in range(15):
        ledger.apply_events([order(c, f"{c}-{n}", "5.00") for c in contacts])
    stop.set()
    for t in threads:
        t.join(60)
    for contact in contacts:
        revisions = [r for c, r in delivered if c == contact]
        assert revisions == sorted(revisions) == list(range(1, 18)), contact


def test_webhook_deliveries_wait_for_their_accounts_earlier_one(db_url: str,
                                                                ledger: Ledger) -> None:
    hook = ledger.add_webhook("http://127.0.0.1:9/hook", None, "whsec_" + "A" * 32)
    ledger.apply_events([signup("a"), signup("b")])
    ledger.relay_events(100, lambda events: [body(e) for e in events])
    assert ledger.webhook_deliveries(hook["id"], "pending", 100).__len__() == 4
    calls: list[tuple[str, str]] = []

    def send(due: webhook_sql.Due) -> tuple[bool, int | None, str]:
        calls.append((due.event_type, due.body))
        return (False, 500, "HTTP 500") if len(calls) == 1 else (True, 200, "")

    # First pass: the heads of a and b; a's fails and is due again in an hour.
    first = ledger.send_due_webhooks(10, send, lambda due: 3600.0)
    assert [ok for _, ok in first] == [False, True]
    # b's second event is due; a's is held back behind its failed first one.
    second = ledger.send_due_webhooks(10, send, lambda due: 3600.0)
    assert len(second) == 1 and second[0][0].body == calls[-1][1]
    assert '"contact_id":"b"' in second[0][0].body
    assert ledger.send_due_webhooks(10, send, lambda due: 3600.0) == []
    # Given up: failed, kept, and redeliverable; then a's events go out in order.
    pending = ledger.webhook_deliveries(hook["id"], "pending", 100)
    engine = db.get_engine(db_url)
    with engine.begin() as conn:
        webhook_sql.attempt_failed(conn, pending[-1]["id"], 500, "HTTP 500", None)
    assert [d["status"] for d in ledger.webhook_deliveries(hook["id"], "failed", 10)] == ["failed"]
    assert ledger.redeliver_webhooks(subscription_id=hook["id"]) == [pending[-1]["id"]]
    third = ledger.send_due_webhooks(10, send, lambda due: 3600.0)
    assert [d.event_type for d, _ in third] == ["account.created"]
    fourth = ledger.send_due_webhooks(10, send, lambda due: 3600.0)
    assert [d.event_type for d, _ in fourth] == ["account.points_updated"]


def test_subscriptions_refuse_unknown_types_and_bad_secrets(ledger: Ledger,
                                                            raw: psycopg.Connection) -> None:
    from loyalty.ledger.boundary import LedgerIntegrityError

    with pytest.raises(LedgerIntegrityError) as refused:
        ledger.add_webhook("http://example.com/x", ["account.deleted"], "whsec_" + "A" * 32)
    assert refused.value.constraint == "ck_webhook_subscriptions_event_types_known"
    with pytest.raises(LedgerIntegrityError) as refused:
        ledger.add_webhook("http://example.com/x", None, "short")
    assert refused.value.constraint == "ck_webhook_subscriptions_secret_shape"
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        raw.execute("UPDATE webhook_subscriptions SET secret = 'whsec_xxxxxxxxxxxxxxxxxxxx'")


def test_redemptions_and_their_refunds_write_events(ledger: Ledger) -> None:
    """`redemption.created` when a redemption is written, `redemption.refunded` once when
    it is refunded (REDEMPTION_TRIGGER of migration 0010), beside the points events."""
    from tests.integration.test_redemptions import redeem, refund

    ledger.apply_events([signup("r")])
    reward = ledger.create_reward(name="Coffee", kind="custom", value=None, currency=None,
                                  cost_in_points=30)
    first = ledger.redeem_points(redeem("r", "rd-1", reward_id=reward["id"]))
    second = ledger.redeem_points(redeem("r", "rd-2", amount=20))
    assert ledger.refund_transaction(refund(second["transaction_id"], "rf-1"))["status"] \
        == "applied"
    assert ledger.refund_transaction(refund(second["transaction_id"], "rf-2"))["reason"] \
        == "already_refunded"
    found = [(e.type, e.data["id"]) for e in events_of(ledger) if e.type.startswith("redemption")]
    assert found == [("redemption.created", first["redemption"]["id"]),
                     ("redemption.created", second["redemption"]["id"]),
                     ("redemption.refunded", second["redemption"]["id"])]
    # The signup, the two redemptions and the refund.
    assert len([e for e in events_of(ledger) if e.type == "account.points_updated"]) == 4


def test_tier_changes_write_tier_changed_events(ledger: Ledger, raw: psycopg.Connection) -> None:
    from datetime import UTC, datetime, timedelta

    ledger.set_program(tiers_status="ACTIVE", rolling_window_months=3)
    ledger.create_tier(name="Silver", required_points=100)
    ledger.create_tier(name="Gold", required_points=300)

    def tier_events() -> list[OutboxEvent]:
        return [e for e in events_of(ledger) if e.type == "account.tier_changed"]

    ledger.apply_events([signup("c1")])  # 100 tier points: into Silver
    ledger.apply_events([order("c1", "A", "250")])  # 350: into Gold
    ledger.apply_events([order("c1", "B", "10")])  # 360: still Gold, nothing
    found = tier_events()
    assert [(e.data["previous_tier"], e.data["tier"]) for e in found] == [
        (None, "Silver"), ("Silver", "Gold")]
    # At the revision of the EARN that moved the tier (the lots trigger that recomputes
    # tiers fires before the outbox trigger of the entries, so it comes first).
    c1 = [e for e in events_of(ledger) if e.contact_id == "c1"]
    assert [(e.type, e.account_revision) for e in c1] == [
        ("account.created", 1), ("account.tier_changed", 2), ("account.points_updated", 2),
        ("account.tier_changed", 3), ("account.points_updated", 3),
        ("account.points_updated", 4)]
    # The window slides past everything: back to the base level, once.
    ledger.recalculate_tiers(datetime.now(UTC) + timedelta(days=120))
    ledger.recalculate_tiers(datetime.now(UTC) + timedelta(days=120))
    found = tier_events()
    assert [(e.data["previous_tier"], e.data["tier"]) for e in found] == [
        (None, "Silver"), ("Silver", "Gold"), ("Gold", None)]
    for event in found:
        EVENTS[event.type].model_validate(envelope(event))
    # A recalculation that would move the tier but rolls back leaves no event.
    account = ledger.get_account(contact_id="c1")
    with pytest.raises(RolledBack), raw.transaction():
        raw.execute("SELECT loyalty_recalculate_tiers(ARRAY[%s]::uuid[], now())",
                    (account["id"],))
        assert raw.execute("SELECT count(*) FROM outbox_events"
                           " WHERE type = 'account.tier_changed'").fetchone()[0] == 4
        raise RolledBack
    assert len(tier_events()) == 3
