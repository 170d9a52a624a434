"""Property test through the real worker: hostile payloads never crash it, never touch
the ledger, and each one is dead-lettered as invalid_payload."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import REDIS_HOST, drop_database, fresh_database
from tests.e2e.conftest import Env, Worker, empty_redis
from tests.e2e.streams import TS, letters_by_message, shop, sql

pytestmark = pytest.mark.e2e

ORDER = {"event_id": "e", "contact_id": "c", "order_id": "o", "total": "10.00",
         "currency": "USD", "occurred_at": TS}
NEVER_VALID = [None, 12, -1, 1.5, True, [], {}, "", "x" * 300, {"$gt": ""}, ["a"]]
FIELD_HOSTILE = {
    "total": ["NaN", "Infinity", "-1", "1e309", "12,50", "0x10", "\u0000", " 1", "1.23456",
              "99999999999999999", 10, 10.5],
    "currency": ["usd", "XXX", "US", "\u20ac", "USD ", "U$D"],
    "occurred_at": ["2026-13-01T00:00:00Z", "yesterday", "2026-01-01T00:00:00",
                    "2026-01-01", 1767225600, "2026-01-01T25:00:00Z"],
}

json_leaf = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
             allow_infinity=False) | st.text(max_size=40))
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                          max_leaves=12)


@st.composite
def hostile(draw: st.DrawFn) -> tuple[list[Any], dict[str, Any]]:
    kind = draw(st.sampled_from(["not-object", "random-object", "bad-field", "field-value",
                                 "extra-field", "missing-field", "arity"]))
    if kind == "not-object":
        return [draw(json_value.filter(lambda v: not isinstance(v, dict)))], {}
    if kind == "random-object":
        return [draw(st.dictionaries(st.text(max_size=12), json_value, max_size=6))], {}
    payload = dict(ORDER)
    if kind == "bad-field":
        payload[draw(st.sampled_from(sorted(ORDER)))] = draw(st.sampled_from(NEVER_VALID))
    elif kind == "field-value":
        name = draw(st.sampled_from(sorted(FIELD_HOSTILE)))
        payload[name] = draw(st.sampled_from(FIELD_HOSTILE[name]))
    elif kind == "extra-field":
        payload[draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in ORDER))] = \
            draw(json_value)
    elif kind == "missing-field":
        del payload[draw(st.sampled_from(sorted(ORDER)))]
    else:
        return draw(st.sampled_from([[], [payload, payload]])), draw(
            st.sampled_from([{}, {"payload": payload}]))
    return [payload], {}


@pytest.fixture(scope="module")
def hostile_env(template_db: str, redis_index: int,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, Worker]]:
    url = fresh_database(template_db)
    redis_url = f"redis://{REDIS_HOST}:6379/{redis_index}"
    empty_redis(redis_url)
    env = Env(url, redis_url, redis_url, Path(tmp_path_factory.mktemp("hostile")))
    worker = Worker(env, concurrency=2, name="hostile").start()
    env.workers.append(worker)
    yield env, worker
    env.close()
    drop_database(url)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(message=hostile())
def test_hostile_payloads_are_dead_lettered(hostile_env: tuple[Env, Worker],
                                            message: tuple[list[Any], dict[str, Any]]) -> None:
    env, worker = hostile_env
    args, kwargs = message
    message_id = shop(env).send_task("loyalty.events.order_completed", args=args, kwargs=kwargs,
                                     queue="loyalty.events").id
    deadline = time.monotonic() + 30
    while message_id not in letters_by_message(env):
        assert time.monotonic() < deadline, f"{message!r} was not dead-lettered"
        assert worker.alive(), "a payload crashed the worker"
        time.sleep(0.05)
    assert letters_by_message(env)[message_id] == "invalid_payload"
    assert sql(env, "SELECT count(*) FROM ledger_entries") == [(0,)]
    assert sql(env, "SELECT count(*) FROM processed_events") == [(0,)]
