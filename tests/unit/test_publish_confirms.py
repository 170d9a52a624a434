"""Publishes the broker did not take: reported to the caller, never acknowledged away."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from celery.exceptions import Reject

from loyalty.errors import TransientError
from loyalty.publish import _why
from loyalty.settings import Settings
from worker import execution
from worker.config import broker_transport, celery_config, publish_options


class MessageNacked(Exception):
    """Stands for py-amqp's: only its name is looked at."""


def test_a_nack_wrapped_by_kombu_is_told_in_words() -> None:
    try:
        try:
            raise MessageNacked()
        except MessageNacked as nack:
            raise RuntimeError() from nack
    except RuntimeError as wrapped:
        assert _why(wrapped).startswith("the broker refused the message")
    assert _why(ValueError("boom")) == "boom"
    assert _why(ValueError()) == "ValueError"


@pytest.mark.parametrize(("url", "confirms", "transport"), [
    ("amqp://guest@localhost//", True, None),
    ("pyamqp://guest@localhost//", True, None),
    ("redis://localhost:6379/0", False, "worker.redis_reliable:Transport"),
    ("rediss://localhost:6379/0", False, "worker.redis_reliable:Transport"),
])
def test_confirms_on_rabbitmq_and_reliable_fetch_on_redis(url: str, confirms: bool,
                                                          transport: str | None) -> None:
    assert bool(publish_options(url).get("confirm_publish")) is confirms
    assert broker_transport(url) == transport
    config = celery_config(Settings(broker_url=url))
    assert config["broker_transport"] == transport
    assert bool(config["broker_transport_options"].get("confirm_publish")) is confirms


def test_a_retry_the_broker_refused_requeues_the_original(monkeypatch) -> None:
    """Celery's task.retry rejects the message for good when its publish fails."""
    monkeypatch.setattr(execution.time, "sleep", lambda _s: None)

    def refused_retry(**_options: Any) -> Any:
        raise Reject(MessageNacked(), requeue=False)

    task = SimpleNamespace(name="loyalty.events.order_completed", retry=refused_retry,
                           request=SimpleNamespace(id="t-1", retries=0, args=[{}]))
    with pytest.raises(Reject) as raised:
        execution.retry(task, TransientError("database away"), 1.0)  # type: ignore[arg-type]
    assert raised.value.requeue is True
