"""The outcome policy as a table: every way a message can fail, and what becomes of it."""

import random

import pytest

from loyalty import policy
from loyalty.errors import (
    AccountNotFound,
    BalanceAboveMaximum,
    CurrencyMismatch,
    IdempotencyConflict,
    InvalidPayload,
    NoActiveRule,
    OrderNotFound,
    TransientError,
)
from loyalty.policy import Action

LIMITS = policy.Limits(max_retries=3, not_found_retries=2, retry_backoff_max=60,
                       not_found_backoff=8.0, poison_deliveries=3)


@pytest.mark.parametrize(("exc", "retries", "timed_out", "action", "reason"), [
    (InvalidPayload("x"), 0, False, Action.DEAD_LETTER, "invalid_payload"),
    (IdempotencyConflict("x"), 0, False, Action.DEAD_LETTER, "idempotency_conflict"),
    (NoActiveRule("x"), 0, False, Action.DEAD_LETTER, "no_active_rule"),
    (BalanceAboveMaximum("x"), 0, False, Action.DEAD_LETTER, "balance_above_maximum"),
    (AccountNotFound("x"), 0, False, Action.RETRY, "account_not_found"),
    (AccountNotFound("x"), 1, False, Action.RETRY, "account_not_found"),
    (AccountNotFound("x"), 2, False, Action.DEAD_LETTER, "account_not_found"),
    (OrderNotFound("x"), 0, False, Action.RETRY, "order_not_found"),
    (OrderNotFound("x"), 2, False, Action.DEAD_LETTER, "order_not_found"),
    (CurrencyMismatch("x"), 0, False, Action.DEAD_LETTER, "currency_mismatch"),
    (TransientError("x"), 0, False, Action.RETRY, "transient"),
    (TransientError("x"), 2, False, Action.RETRY, "transient"),
    (TransientError("x"), 3, False, Action.DEAD_LETTER, "retries_exhausted"),
    (RuntimeError("x"), 0, True, Action.RETRY, "RuntimeError"),
    (RuntimeError("x"), 3, True, Action.DEAD_LETTER, "retries_exhausted"),
    (KeyError("x"), 0, False, Action.DEAD_LETTER, "internal_error"),
])
def test_after_failure(exc: BaseException, retries: int, timed_out: bool, action: Action,
                       reason: str) -> None:
    decision = policy.after_failure(exc, retries, LIMITS, timed_out=timed_out,
                                    rand=random.Random(0))
    assert (decision.action, decision.reason) == (action, reason)
    assert (decision.delay > 0) is (action is Action.RETRY)


def test_a_missing_account_waits_longer_than_a_database_away() -> None:
    rand = random.Random(0)
    waits = [policy.after_failure(AccountNotFound("x"), 0, LIMITS, rand=rand).delay
             for _ in range(20)]
    assert min(waits) >= LIMITS.not_found_backoff / 2


def test_a_bug_is_dead_lettered_with_its_type() -> None:
    assert policy.after_failure(KeyError("k"), 0, LIMITS).detail == "KeyError: 'k'"


@pytest.mark.parametrize(("exc", "action"), [
    (TransientError("away"), Action.REQUEUE),
    (InvalidPayload("refused"), Action.ALONE),
    (RuntimeError("bug"), Action.ALONE),
])
def test_after_batch_failure(exc: BaseException, action: Action) -> None:
    assert policy.after_batch_failure(exc).action is action


@pytest.mark.parametrize(("crashes", "action"), [
    (1, Action.REQUEUE), (2, Action.REQUEUE), (3, Action.DEAD_LETTER), (9, Action.DEAD_LETTER)])
def test_after_crash(crashes: int, action: Action) -> None:
    decision = policy.after_crash(crashes, LIMITS, "WorkerLostError: gone")
    assert decision.action is action
    if action is Action.DEAD_LETTER:
        assert decision.reason == "poison"
        assert decision.detail == f"crashed its worker process {crashes} times; last: " \
                                  "WorkerLostError: gone"


def test_store_unavailable_keeps_the_message_on_the_broker() -> None:
    assert policy.store_unavailable(0, LIMITS, in_task=True).action is Action.RETRY
    assert policy.store_unavailable(0, LIMITS, in_task=False).action is Action.REQUEUE
    assert policy.retry_unpublished().action is Action.REQUEUE


class SecurityError(Exception):
    pass


class ContentDisallowed(Exception):
    pass


class DecodeError(Exception):
    pass


@pytest.mark.parametrize(("exc", "reason"), [
    (SecurityError("bad signature"), "signature_invalid"),
    (ContentDisallowed("pickle"), "content_disallowed"),
    (DecodeError("not json"), "undecodable_body"),
    (ValueError("no id"), "malformed_message"),
])
def test_unreadable_reason(exc: BaseException, reason: str) -> None:
    assert policy.unreadable_reason(exc) == reason


def test_task_letter_keeps_celerys_body_shape() -> None:
    letter = policy.task_letter("loyalty.events.signup", "m-1", [{"a": 1}], {}, "invalid_payload",
                                "bad", retries=2, delivery_info={"routing_key": "r"})
    assert letter.payload == '[[{"a": 1}], {}, {}]'
    assert letter.headers == {"content_type": "application/json", "retries": 2,
                              "delivery_info": {"routing_key": "r"}}


class RawMessage:
    headers = {"task": "nope", "id": "m-2"}
    body = b"\x80\x04pickle"
    content_type = "application/x-python-serialize"
    content_encoding = "binary"
    properties: dict[str, str] = {}
    delivery_info = {"routing_key": "loyalty.events"}


def test_raw_letter_never_reads_the_body() -> None:
    letter = policy.raw_letter(RawMessage(), "unknown_task", "KeyError: 'nope'")
    assert letter.headers["body_encoding"] == "base64"
    assert letter.task_name == "nope" and letter.message_id == "m-2"
    assert letter.error_detail.startswith("no task named 'nope'")
