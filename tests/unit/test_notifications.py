"""Pure parts of outgoing events: the webhook retry decision, the target guard, signing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook

from loyalty.errors import SettingsError
from loyalty.ledger.webhooks import Due
from loyalty.notifications.events import RetryPolicy
from loyalty.notifications.sender import signed_headers
from loyalty.notifications.targets import TargetRefused, check_url, refused_address
from loyalty.settings import Settings


@pytest.mark.parametrize(("attempts", "elapsed", "expected"), [
    (1, 0, 5.0), (2, 0, 10.0), (3, 100, 20.0), (20, 0, 3600.0), (5, 86_000, 80.0), (9, 86_000, None),
    (1, 86_396, None), (1, 86_395, 5.0),
])
def test_retry_policy(attempts: int, elapsed: float, expected: float | None) -> None:
    policy = RetryPolicy(first_delay=5.0, max_delay=3600.0, retry_for=86_400.0)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert policy.next_delay(attempts, now - timedelta(seconds=elapsed), now) == expected


@pytest.mark.parametrize(("address", "why"), [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("169.254.169.254", "link-local"),
    ("10.1.2.3", "private"), ("192.168.0.1", "private"), ("fd00:ec2::254", "private"),
    ("::ffff:127.0.0.1", "loopback"), ("0.0.0.0", "unspecified"),  # noqa: S104
    ("224.0.0.1", "multicast"),
    ("93.184.216.34", None), ("2606:4700::1111", None),
])
def test_refused_addresses(address: str, why: str | None) -> None:
    found = refused_address(address)
    assert (found.split()[0] if found else None) == why


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/hook", "http://localhost/hook", "http://metadata.google.internal/",
    "http://[::1]/", "ftp://example.com/", "http://user:pw@example.com/", "http:///nohost",
    "http://169.254.169.254/latest/meta-data/",
])
def test_refused_urls(url: str) -> None:
    with pytest.raises(TargetRefused) as refused:
        check_url(url, allow_private=False)
    assert refused.value.reason == "webhook_target_refused"


def test_the_operator_may_allow_private_targets() -> None:
    assert check_url("http://127.0.0.1:8080/hook", allow_private=True)
    with pytest.raises(TargetRefused):
        check_url("ftp://127.0.0.1/", allow_private=True)


def test_signature_verifies_with_the_standard_library() -> None:
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    due = Due(1, 1, "http://x", secret, uuid.uuid4(), "account.created", '{"a":1}', 0,
              datetime.now(UTC))
    headers = signed_headers(due, datetime.now(UTC))
    assert headers["webhook-id"] == str(due.event_id)
    assert Webhook(secret).verify(due.body, headers) == {"a": 1}
    with pytest.raises(Exception, match="signature"):
        Webhook(secret).verify('{"a":2}', headers)


@pytest.mark.parametrize(("env", "message"), [
    ({"LOYALTY_WEBHOOK_BACKOFF": "0"}, "LOYALTY_WEBHOOK_BACKOFF"),
    ({"LOYALTY_WEBHOOK_BACKOFF": "10", "LOYALTY_WEBHOOK_BACKOFF_MAX": "5"}, "BACKOFF_MAX"),
    ({"LOYALTY_RELAY_INTERVAL_MS": "0"}, "LOYALTY_RELAY_INTERVAL_MS"),
    ({"LOYALTY_RELAY_BATCH_SIZE": "0"}, "LOYALTY_RELAY_BATCH_SIZE"),
    ({"LOYALTY_OUTBOX_RETENTION": "1"}, "LOYALTY_OUTBOX_RETENTION"),
    ({"LOYALTY_METRICS_PORT": "70000"}, "LOYALTY_METRICS_PORT"),
    ({"LOYALTY_HEARTBEAT_MAX_AGE": "1"}, "LOYALTY_HEARTBEAT_MAX_AGE"),
    ({"LOYALTY_WEBHOOK_TIMEOUT": "0"}, "LOYALTY_WEBHOOK_TIMEOUT"),
])
def test_outgoing_event_settings_are_checked(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_outgoing_event_settings_defaults() -> None:
    s = Settings.from_env({"LOYALTY_WEBHOOK_ALLOW_PRIVATE": "true", "LOYALTY_METRICS_PORT": "9808"})
    assert (s.webhook_allow_private, s.metrics_port, s.webhook_retry_for) == (True, 9808, 86_400)
    assert Settings.from_env({}).metrics_port == 0  # off unless set
