"""Replay and discard of dead letters against a real PostgreSQL."""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from loyalty import db
from loyalty.errors import DeadLetterNotFound, DeadLetterNotPending
from loyalty.ledger import Ledger
from loyalty.replay import decode_letter, replay
from tests.integration.test_ledger import TS, signup

ORDER = {"event_id": "evt-1", "contact_id": "late", "order_id": "o-1", "total": "25.00",
         "currency": "USD", "occurred_at": TS}


def letter(ledger: Ledger, payload: Any, *, task: str = "loyalty.events.order_completed",
           reason: str = "account_not_found", message_id: str | None = None,
           headers: dict | None = None) -> int:
    body = payload if isinstance(payload, str) else json.dumps([[payload], {}, {}])
    return ledger.add_dead_letter(task_name=task, message_id=message_id, payload=body,
                                  headers=headers or {"content_type": "application/json"},
                                  reason=reason, error_detail="x")


def test_replay_after_the_signup_arrives(ledger: Ledger) -> None:
    letter_id = letter(ledger, ORDER)
    dry = replay(ledger, [letter_id], dry_run=True)
    assert dry["items"][0]["result"] == "would_fail"
    assert dry["items"][0]["reason"] == "account_not_found"
    assert ledger.dead_letter(letter_id)["attempts"] == 1  # a dry run writes nothing
    failed = replay(ledger, [letter_id])
    assert failed["summary"] == {"failed": 1}
    assert (ledger.dead_letter(letter_id)["attempts"], ledger.dead_letter(letter_id)["status"]) == (
        2, "pending")

    ledger.apply_signup(signup("late"))
    dry = replay(ledger, [letter_id], dry_run=True)
    assert dry["items"][0]["result"] == "would_replay"
    assert dry["items"][0]["effect"]["points"] == 25
    assert ledger.get_account(contact_id="late")["points"]["balance"] == 100
    assert ledger.dead_letter(letter_id)["status"] == "pending"

    done = replay(ledger, [letter_id], actor="ops")
    assert done["items"][0]["result"] == "replayed"
    assert ledger.get_account(contact_id="late")["points"]["balance"] == 125
    shown = ledger.dead_letter(letter_id)
    assert shown["status"] == "replayed" and shown["replayed_at"]
    assert shown["replay_outcome"]["actor"] == "ops"
    again = replay(ledger, [letter_id])
    assert again["items"][0]["result"] == "skipped"
    assert ledger.verify()["ok"]


def test_letter_whose_event_was_already_applied_changes_nothing(ledger: Ledger) -> None:
    ledger.apply_signup(signup("late"))
    from schemas import OrderCompletedEvent

    ledger.apply_order(OrderCompletedEvent.model_validate(ORDER))
    before = ledger.get_account(contact_id="late")
    letter_id = letter(ledger, ORDER)
    result = replay(ledger, [letter_id])["items"][0]
    assert result["result"] == "replayed" and result["effect"]["duplicate"] is True
    assert ledger.get_account(contact_id="late") == before


def test_concurrent_replays_of_one_letter_apply_once(db_url: str) -> None:
    ledger = Ledger(db.get_engine(db_url, pool_size=8))
    ledger.apply_signup(signup("late"))
    letter_id = letter(ledger, ORDER)
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: replay(ledger, [letter_id])["items"][0]["result"],
                                range(6)))
    assert sorted(results) == ["replayed"] + ["skipped"] * 5
    assert ledger.get_account(contact_id="late")["points"]["balance"] == 125


@pytest.mark.parametrize(("task", "payload", "headers", "result"), [
    ("loyalty.events.signup", base64.b64encode(b"\x80\x04pickle").decode(),
     {"content_type": "application/x-python-serialize", "body_encoding": "base64"},
     "not_replayable"),
    ("loyalty.nope", json.dumps([[{}], {}, {}]), {"content_type": "application/json"},
     "not_replayable"),
    ("loyalty.events.signup", "{not json", {"content_type": "application/json"},
     "not_replayable"),
    ("loyalty.events.signup", json.dumps([[{"event_id": 1}], {}, {}]),
     {"content_type": "application/json"}, "invalid_payload"),
])
def test_letters_that_cannot_be_replayed_stay_pending(ledger: Ledger, task: str, payload: str,
                                                      headers: dict, result: str) -> None:
    letter_id = letter(ledger, payload, task=task, headers=headers)
    item = replay(ledger, [letter_id])["items"][0]
    assert (item["result"], item["reason"]) == ("failed", result)
    shown = ledger.dead_letter(letter_id)
    assert (shown["status"], shown["attempts"], shown["payload"]) == ("pending", 2, payload)
    assert ledger.totals()["accounts"] == 0


def test_decode_never_calls_a_loader_for_foreign_content_types() -> None:
    from loyalty.errors import NotReplayable

    evil = {"task_name": "loyalty.events.signup", "payload": json.dumps([[{}], {}, {}]),
            "headers": {"content_type": "application/x-yaml"}}
    with pytest.raises(NotReplayable):
        decode_letter(evil)


def test_discard_keeps_the_letter_with_reason_and_actor(ledger: Ledger) -> None:
    letter_id = letter(ledger, ORDER)
    discarded = ledger.discard_dead_letter(letter_id, why="test order", actor="carol")
    assert (discarded["status"], discarded["discarded_by"], discarded["discard_reason"]) == (
        "discarded", "carol", "test order")
    with pytest.raises(DeadLetterNotPending, match="discarded, not pending"):
        ledger.discard_dead_letter(letter_id, why="again", actor="carol")
    with pytest.raises(DeadLetterNotFound):
        ledger.discard_dead_letter(999, why="x", actor="y")
    assert replay(ledger, ledger.pending_dead_letter_ids(reason="account_not_found"))[
        "items"] == []


def test_selection_and_stats(ledger: Ledger) -> None:
    a = letter(ledger, ORDER)
    b = letter(ledger, {**ORDER, "event_id": "evt-2"}, reason="no_active_rule")
    letter(ledger, "x", task="loyalty.nope", reason="unknown_task")
    assert ledger.pending_dead_letter_ids(reason="no_active_rule") == [b]
    assert ledger.pending_dead_letter_ids(ids=[a, b, 999]) == [a, b]
    # A limit takes the oldest; the command line's replay passes none and takes them all.
    assert ledger.pending_dead_letter_ids(limit=2) == [a, b]
    # By reason, time or all, never a letter kept unread (unknown_task here).
    assert len(ledger.pending_dead_letter_ids(limit=None)) == 2
    assert ledger.pending_dead_letter_ids(reason="unknown_task") == []
    stats = ledger.dead_letter_stats()
    assert stats["by_reason"]["account_not_found"]["pending"] == 1
    assert stats["by_status"] == {"pending": 3, "replayed": 0, "discarded": 0}
    assert stats["total"] == 3


def test_sql_fragments_are_stored_verbatim(ledger: Ledger) -> None:
    nasty = "x'); DROP TABLE accounts; --"
    ledger.apply_signup(signup(nasty, name="Robert'); DROP TABLE contacts;--"))
    assert ledger.get_account(contact_id=nasty)["contact_id"] == nasty
    letter_id = letter(ledger, nasty, task=nasty, reason="unknown_task")
    assert ledger.dead_letter(letter_id)["payload"] == nasty
    assert ledger.verify()["ok"]


def test_crash_counter(ledger: Ledger) -> None:
    assert [ledger.record_crash("m1", "t", "lost") for _ in range(3)] == [1, 2, 3]
    assert ledger.record_crash("m2", "t", "lost") == 1


def test_nul_characters_never_stop_a_dead_letter(ledger: Ledger) -> None:
    """Found by the hostile-payload property test: NUL broke the insert and lost the message."""
    letter_id = ledger.add_dead_letter(
        task_name="t\x00", message_id="m\x00", payload='[[{"a\\u0000": 1}], {}, {}]',
        headers={"k\x00": ["v\x00", {"\x00": "\\u0000"}]}, reason="invalid_payload",
        error_detail="a\x00: Extra inputs are not permitted")
    shown = ledger.dead_letter(letter_id)
    assert shown["error_detail"] == "a\\x00: Extra inputs are not permitted"
    assert shown["headers"] == {"k\\x00": ["v\\x00", {"\\x00": "\\u0000"}]}
    assert shown["payload"] == '[[{"a\\u0000": 1}], {}, {}]'


def test_a_replay_of_many_letters_treats_each_on_its_own(ledger: Ledger) -> None:
    ledger.apply_signup(signup("c1"))
    ids = [letter(ledger, {**ORDER, "event_id": f"e{k}", "contact_id": "c1", "order_id": f"o{k}",
                           "total": "2.00"}, message_id=f"m{k}") for k in range(700)]
    stale = letter(ledger, {**ORDER, "event_id": "ghost"}, message_id="ghost")  # no account
    bad = letter(ledger, "{not json", task="loyalty.events.signup", message_id="bad")
    adjust = letter(ledger, {"request_id": "r1", "contact_id": "c1", "amount": -50,
                             "description": "fix", "actor": "ops"},
                    task="loyalty.accounts.adjust_points", message_id="r1")
    ledger.discard_dead_letter(ids[0], why="test", actor="ops")
    everything = [*ids, stale, bad, adjust]
    dry = replay(ledger, everything, dry_run=True)
    assert dry["summary"] == {"skipped": 1, "would_replay": 700, "would_fail": 2}
    assert ledger.get_account(contact_id="c1")["points"]["balance"] == 100
    done = replay(ledger, everything, actor="ops")
    assert done["summary"] == {"skipped": 1, "replayed": 700, "failed": 2}
    assert [i["id"] for i in done["items"]] == everything
    assert ledger.get_account(contact_id="c1")["points"]["balance"] == 100 + 2 * 699 - 50
    assert ledger.dead_letter(stale)["attempts"] == 2
    assert ledger.dead_letter(stale)["reason"] == "account_not_found"
    assert ledger.dead_letter(bad)["status"] == "pending"
    assert ledger.dead_letter(ids[5])["status"] == "replayed"
    assert replay(ledger, everything)["summary"] == {"skipped": 701, "failed": 2}
    assert ledger.verify()["ok"]


def test_a_chunk_refused_whole_is_replayed_letter_by_letter(ledger: Ledger,
                                                           raw_owner: Any) -> None:
    """The database refuses the chunk (here: no letter may become `replayed`); each letter
    is then tried alone, fails alone, and stays pending with nothing applied."""
    ledger.apply_signup(signup("late"))
    first = letter(ledger, ORDER)
    second = letter(ledger, {**ORDER, "event_id": "evt-2", "order_id": "o-2"})
    raw_owner.execute("ALTER TABLE dead_letters ADD CONSTRAINT test_no_replays"
                " CHECK (status <> 'replayed')")
    report = replay(ledger, [first, second], actor="ops")
    assert report["summary"] == {"failed": 2}
    assert [(i["id"], i["task_name"]) for i in report["items"]] == [
        (first, "loyalty.events.order_completed"), (second, "loyalty.events.order_completed")]
    for letter_id in (first, second):
        shown = ledger.dead_letter(letter_id)
        assert (shown["status"], shown["attempts"]) == ("pending", 2)
        assert shown["replay_outcome"]["actor"] == "ops"
    assert ledger.get_account(contact_id="late")["points"]["balance"] == 100  # nothing applied
    assert ledger.verify()["ok"]
