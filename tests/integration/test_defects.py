"""Issue 8, against a real PostgreSQL: point ceilings, re-sent orders, replay outcomes."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

from loyalty.errors import (
    BalanceAboveMaximum,
    ContactConflict,
    InvalidRule,
    PointsAboveMaximum,
)
from loyalty.ledger import EventOutcome, Ledger
from loyalty.replay import replay
from tests.integration.test_dead_letters import letter
from tests.integration.test_ledger import adjust, order, signup

# -- item 2: one ceiling for every way points arrive ----------------------------------


def test_an_order_cannot_earn_more_than_the_earn_limit(ledger: Ledger) -> None:
    ledger.apply_signup(signup("big"))
    with pytest.raises(PointsAboveMaximum):
        ledger.apply_order(order("big", "o-huge", "99999999999999"))
    [result] = ledger.apply_events([order("big", "o-huge", "99999999999999")])
    assert isinstance(result, PointsAboveMaximum)
    assert result.reason == "points_above_maximum"
    assert ledger.get_account(contact_id="big")["points"]["balance"] == 100
    assert ledger.verify()["ok"]


def test_an_overflowing_rule_is_refused_as_points_above_maximum(ledger: Ledger) -> None:
    """1,000,000,000 points per 0.0001 JPY: the product does not fit a bigint."""
    ledger.apply_signup(signup("jp"))
    ledger.create_rule(name="silly", trigger="order.completed", kind="conversion",
                       points=1_000_000_000, money_amount=Decimal("0.0001"), currency="JPY")
    for apply in (lambda e: ledger.apply_order(e), lambda e: ledger.apply_events([e])[0]):
        try:
            result = apply(order("jp", "o-yen", "99999999999999", currency="JPY"))
        except PointsAboveMaximum as exc:
            result = exc
        assert isinstance(result, PointsAboveMaximum), result


def test_earning_stops_at_the_balance_maximum(ledger: Ledger) -> None:
    ledger.apply_signup(signup("rich"))
    ledger.adjust_points(adjust("rich", "r1", balance=999_999_000))
    with pytest.raises(BalanceAboveMaximum):
        ledger.apply_order(order("rich", "o-1", "1001"))
    results = ledger.apply_events([order("rich", "o-2", "900"), order("rich", "o-3", "200")])
    assert isinstance(results[0], EventOutcome) and results[0].points == 900
    assert isinstance(results[1], BalanceAboveMaximum)
    assert results[1].reason == "balance_above_maximum"
    assert ledger.get_account(contact_id="rich")["points"]["balance"] == 999_999_900
    assert ledger.verify()["ok"]


def test_a_signup_rule_above_the_earn_limit_is_refused(ledger: Ledger,
                                                       raw: psycopg.Connection) -> None:
    with pytest.raises(InvalidRule, match="at most 9999999"):
        ledger.update_rule(1, points=10_000_000)
    raw.execute("UPDATE earn_rules SET points = 10000000, revision = 2 WHERE id = 1")  # past the code
    with pytest.raises(PointsAboveMaximum):
        ledger.apply_signup(signup("s"))
    [result] = ledger.apply_events([signup("s2")])
    assert isinstance(result, PointsAboveMaximum)


def test_an_adjustment_may_lower_a_balance_above_the_maximum() -> None:
    from loyalty.adjustments import decide_adjustment

    decision = decide_adjustment(balance=1_000_000_006, revision=3, amount=-5, new_balance=None,
                                 expected_revision=None)
    assert decision.applied and decision.balance_after == 1_000_000_001
    refused = decide_adjustment(balance=999_999_999, revision=3, amount=1, new_balance=None,
                                expected_revision=None)
    assert refused.reason == "balance_above_maximum"


@pytest.mark.parametrize(("statements", "constraint"), [
    # an EARN above 9,999,999 (the entry first: the account alone would pass)
    (("INSERT INTO ledger_entries (account_id, type, amount, balance_after, idempotency_key,"
      " event_type, event_id, rule_id, rule_revision, account_revision) VALUES (%(a)s, 'EARN',"
      " 10000000, 10000100, 'event:raw-1', 'signup', 'raw-1', 1, 1, 3)",),
     "ck_ledger_entries_earn_at_most_max"),
    # a balance above 999,999,999 through ADJUST
    (("UPDATE accounts SET balance = 1000000000, adjusted = adjusted + 999999900,"
      " revision = revision + 1 WHERE id = %(a)s",),
     "ck_accounts_balance_at_most_max"),
    (("INSERT INTO ledger_entries (account_id, type, amount, balance_after, balance_before,"
      " idempotency_key, actor, account_revision) VALUES (%(a)s, 'ADJUST', 999999900,"
      " 1000000000, 100, 'adjust:raw', 'x', 3)",),
     "ck_ledger_entries_balance_after_at_most_max"),
])
def test_the_database_enforces_the_ceilings(ledger: Ledger, raw: psycopg.Connection,
                                            statements: tuple[str, ...], constraint: str) -> None:
    account = ledger.apply_signup(signup("raw")).account_id
    with pytest.raises(psycopg.errors.CheckViolation) as info, raw.transaction():
        for sql in statements:
            raw.execute(sql, {"a": account})
    assert info.value.diag.constraint_name == constraint
    assert ledger.verify()["ok"]


# -- item 4: an order re-sent with another total is recorded --------------------------


def test_a_resent_order_with_another_total_is_recorded(ledger: Ledger) -> None:
    ledger.apply_signup(signup("alice"))
    first = ledger.apply_order(order("alice", "order-1001", "49.90", event_id="e-1"))
    assert first.outcome == "earned"
    same = ledger.apply_order(order("alice", "order-1001", "49.9", event_id="e-2"))
    assert (same.outcome, same.detail) == ("duplicate_order", None)
    changed = ledger.apply_order(order("alice", "order-1001", "99.90", event_id="e-3"))
    assert changed.outcome == "duplicate_order_changed"
    assert changed.points == 0
    assert changed.detail == {"order_id": "order-1001", "earned_event_id": "e-1",
                              "earned_total": "49.9", "earned_currency": "USD",
                              "total": "99.9", "currency": "USD"}
    # the same through a batch, and again as a re-delivery
    [batched] = ledger.apply_events([order("alice", "order-1001", "12.00", event_id="e-4",
                                           currency="EUR")])
    assert isinstance(batched, EventOutcome)
    assert batched.outcome == "duplicate_order_changed"
    assert batched.detail is not None
    assert (batched.detail["total"], batched.detail["currency"]) == ("12", "EUR")
    again = ledger.apply_order(order("alice", "order-1001", "99.90", event_id="e-3"))
    assert (again.duplicate, again.outcome, again.detail) == (True, changed.outcome,
                                                              changed.detail)
    listed = ledger.list_events(outcome="duplicate_order_changed")["items"]
    assert [e["event_id"] for e in listed] == ["e-4", "e-3"]
    assert listed[1]["payload"]["total"] == "99.9"
    assert listed[1]["detail"]["earned_total"] == "49.9"
    by_contact = ledger.list_events(contact_id="alice")["items"]
    assert {e["event_id"]: e["outcome"] for e in by_contact} == {
        "signup-alice": "earned", "e-1": "earned", "e-2": "duplicate_order",
        "e-3": "duplicate_order_changed", "e-4": "duplicate_order_changed"}
    assert ledger.verify()["ok"]


def test_a_batch_records_a_change_against_an_order_earned_in_the_same_batch(
        ledger: Ledger) -> None:
    ledger.apply_signup(signup("bob"))
    results = ledger.apply_events([order("bob", "o-9", "10.00", event_id="b-1"),
                                   order("bob", "o-9", "10.000", event_id="b-2"),
                                   order("bob", "o-9", "11.00", event_id="b-3")])
    assert [r.outcome for r in results if isinstance(r, EventOutcome)] == [
        "earned", "duplicate_order", "duplicate_order_changed"]


# -- item 6: a failed replay keeps the reason the letter was kept for -----------------


def test_a_failed_replay_keeps_the_original_reason(ledger: Ledger) -> None:
    """Letters kept for one reason fail their replay for another; the reason stays."""
    orphan = letter(ledger, {"event_id": "e-1", "contact_id": "nobody", "order_id": "o-1",
                             "total": "5.00", "currency": "USD",
                             "occurred_at": "2026-01-31T12:00:00Z"}, reason="retries_exhausted")
    gone = letter(ledger, {"x": 1}, task="loyalty.events.nonexistent", reason="internal_error")
    report = replay(ledger, [orphan, gone])
    assert report["summary"] == {"failed": 2}
    for letter_id, reason, failed_as in ((orphan, "retries_exhausted", "account_not_found"),
                                         (gone, "internal_error", "not_replayable")):
        kept = ledger.dead_letter(letter_id)
        assert (kept["reason"], kept["error_detail"], kept["status"]) == (reason, "x", "pending")
        assert kept["replay_outcome"]["reason"] == failed_as
        assert kept["replay_outcome"]["result"] == "failed"


def test_letters_kept_unread_are_skipped_and_left_as_they_were(ledger: Ledger) -> None:
    unknown = letter(ledger, {"x": 1}, task="loyalty.events.nonexistent", reason="unknown_task")
    pickled = letter(ledger, "gASVAAAA", reason="content_disallowed",
                     headers={"content_type": "application/x-python-serialize"})
    report = replay(ledger, [unknown, pickled])
    assert report["summary"] == {"skipped": 2}
    for letter_id, reason in ((unknown, "unknown_task"), (pickled, "content_disallowed")):
        kept = ledger.dead_letter(letter_id)
        assert (kept["reason"], kept["status"], kept["attempts"]) == (reason, "pending", 1)
        assert kept["replay_outcome"] is None
    assert [d["id"] for d in ledger.list_dead_letters(reason="unknown_task")["items"]] == [unknown]


# -- item 8: the member_id conflict says which member_id ------------------------------


def test_a_member_id_conflict_names_the_member_id(ledger: Ledger) -> None:
    ledger.apply_signup(signup("c1", member_id="m-shared"))
    with pytest.raises(ContactConflict, match="member_id 'm-shared'"):
        ledger.apply_signup(signup("c2", member_id="m-shared"))
    [result] = ledger.apply_events([signup("c3", member_id="m-shared")])
    assert isinstance(result, ContactConflict)
    assert "member_id 'm-shared'" in str(result)


# -- more of the same kinds --------------------------------------------------------------


def test_the_replay_task_refuses_an_unknown_reason(ledger: Ledger) -> None:
    from loyalty.errors import InvalidPayload
    from schemas.events import ReplayRequest
    from tasks.deadletters import replay

    with pytest.raises(InvalidPayload, match="unknown reason code 'bogus'"):
        replay(ledger, ReplayRequest(reason="bogus"))
    assert replay(ledger, ReplayRequest(reason="account_not_found"))["items"] == []

