"""Webhook requests: signed by the Standard Webhooks specification, sent with httpx.

`webhook-id` is the event's id, the same on every retry and redelivery, so a receiver
drops duplicates by it; `webhook-timestamp` is the attempt's time and
`webhook-signature` is `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` under the
subscription's secret. Redirects are not followed (a redirect could lead past the target
check), and every request has a timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from standardwebhooks import Webhook

from loyalty.ledger.webhooks import Due
from loyalty.notifications.targets import TargetRefused, check_url


@dataclass(frozen=True)
class Attempt:
    ok: bool
    status_code: int | None
    error: str


def signed_headers(due: Due, now: datetime) -> dict[str, str]:
    signature = Webhook(due.secret).sign(str(due.event_id), now, due.body)
    return {
        "webhook-id": str(due.event_id),
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


class WebhookSender:
    def __init__(self, timeout: float, allow_private: bool) -> None:
        self.allow_private = allow_private
        self.client = httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False,
                                   headers={"user-agent": "loyalty-ledger-webhooks"})

    def send(self, due: Due) -> Attempt:
        try:
            check_url(due.url, self.allow_private)
        except TargetRefused as exc:
            return Attempt(False, None, str(exc))
        try:
            response = self.client.post(due.url, content=due.body.encode(),
                                        headers=signed_headers(due, datetime.now(UTC)))
        except httpx.HTTPError as exc:
            return Attempt(False, None, f"{type(exc).__name__}: {exc}")
        if 200 <= response.status_code < 300:
            return Attempt(True, response.status_code, "")
        return Attempt(False, response.status_code, f"HTTP {response.status_code}")

    def close(self) -> None:
        self.client.close()
