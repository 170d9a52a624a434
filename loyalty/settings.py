"""The one typed settings object, read from `LOYALTY_*` environment variables.

An unknown `LOYALTY_*` variable is an error rather than being ignored: a typo in
a deployment (`LOYALTY_BROKER_ULR`) must not silently fall back to a default.
Variables starting with `LOYALTY_TEST_` belong to the test suite and are skipped.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from loyalty.errors import SettingsError

PREFIX = "LOYALTY_"


@dataclass(frozen=True)
class Settings:
    #: SQLAlchemy URL of the ledger database (psycopg 3 driver).
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/loyalty"
    #: Celery broker: redis://... (default) or amqp://... for RabbitMQ.
    broker_url: str = "redis://127.0.0.1:6379/0"
    #: Where adjust_points results are stored for the caller to read.
    result_backend: str = "redis://127.0.0.1:6379/1"
    #: Seconds before Redis re-delivers an unacknowledged message (acks_late).
    #: Must exceed the task time limit, or a slow task would run twice.
    visibility_timeout: int = 300
    #: Hard time limit of one task, in seconds.
    task_time_limit: int = 60
    #: Messages a worker process reserves ahead; unacked ones are re-delivered.
    prefetch_multiplier: int = 4
    #: Events applied per transaction on the batch path; 1 turns batching off.
    batch_size: int = 500
    #: Longest a buffered event waits for its batch to fill, in milliseconds.
    batch_wait_ms: int = 10
    #: Retries of a transient failure (database down, deadlock) before dead-lettering.
    max_retries: int = 8
    #: Upper bound of the exponential retry delay, in seconds.
    retry_backoff_max: int = 120
    #: Retries of an order whose contact has no account yet (its signup may be in
    #: flight) before it is dead-lettered as account_not_found.
    not_found_retries: int = 5
    #: First delay of those retries, in seconds; it doubles each time (with jitter),
    #: so the defaults wait about 8 + 16 + 32 + 64 + 120 seconds at most.
    not_found_backoff: float = 8.0
    #: Times a message may kill its worker process (or hit the hard time limit)
    #: before it is dead-lettered as poison instead of being delivered again.
    poison_deliveries: int = 3
    #: Seconds that adjust_points results are kept in the result backend.
    result_expires: int = 86400
    #: How far in the future an event's occurred_at may be, in seconds (clock skew);
    #: later ones are dead-lettered as invalid_payload. Earlier than 2000-01-01 always is.
    max_future_skew: int = 86400
    #: Connections per worker process.
    db_pool_size: int = 5
    log_level: str = "INFO"
    #: "json" for one JSON object per line, "text" for humans.
    log_format: Literal["json", "text"] = "json"
    #: Optional Celery message signing (the "auth" serializer): paths to this
    #: worker's private key, its certificate, and a folder of trusted certificates.
    #: All three or none. When set, unsigned messages are refused and dead-lettered.
    security_key: str = ""
    security_certificate: str = ""
    security_cert_store: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        known = {f.name: f for f in fields(cls)}
        values: dict[str, object] = {}
        for key, raw in env.items():
            if not key.startswith(PREFIX) or key.startswith(PREFIX + "TEST_"):
                continue
            name = key[len(PREFIX):].lower()
            if name not in known:
                raise SettingsError(f"unknown setting {key}; known: {', '.join(env_names())}")
            default = known[name].default
            if isinstance(default, bool):
                values[name] = raw.lower() in ("1", "true", "yes", "on")
            elif isinstance(default, float):
                try:
                    values[name] = float(raw)
                except ValueError:
                    raise SettingsError(f"{key} must be a number, got {raw!r}") from None
            elif isinstance(default, int):
                try:
                    values[name] = int(raw)
                except ValueError:
                    raise SettingsError(f"{key} must be an integer, got {raw!r}") from None
            else:
                values[name] = raw
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.log_format not in ("json", "text"):
            raise SettingsError("LOYALTY_LOG_FORMAT must be 'json' or 'text'")
        if self.visibility_timeout <= self.task_time_limit:
            raise SettingsError(
                "LOYALTY_VISIBILITY_TIMEOUT must be larger than LOYALTY_TASK_TIME_LIMIT"
            )
        for name in ("task_time_limit", "prefetch_multiplier", "db_pool_size", "result_expires"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{PREFIX}{name.upper()} must be at least 1")
        for name in ("max_retries", "not_found_retries", "max_future_skew"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{PREFIX}{name.upper()} must not be negative")
        if not 1 <= self.batch_size <= 5000:
            raise SettingsError("LOYALTY_BATCH_SIZE must be between 1 and 5000")
        if not 1 <= self.batch_wait_ms <= 10_000:
            raise SettingsError("LOYALTY_BATCH_WAIT_MS must be between 1 and 10000")
        if self.poison_deliveries < 1:
            raise SettingsError("LOYALTY_POISON_DELIVERIES must be at least 1")
        if not 0 < self.not_found_backoff <= self.retry_backoff_max:
            raise SettingsError("LOYALTY_NOT_FOUND_BACKOFF must be above 0 and at most "
                                "LOYALTY_RETRY_BACKOFF_MAX")
        if self.retry_backoff_max >= self.visibility_timeout:
            # A retry is held unacknowledged until due; longer than this, Redis re-delivers it.
            raise SettingsError("LOYALTY_RETRY_BACKOFF_MAX must be below LOYALTY_VISIBILITY_TIMEOUT")
        signing = (self.security_key, self.security_certificate, self.security_cert_store)
        if any(signing) and not all(signing):
            raise SettingsError("message signing needs LOYALTY_SECURITY_KEY, "
                                "LOYALTY_SECURITY_CERTIFICATE and LOYALTY_SECURITY_CERT_STORE")
        scheme = urlsplit(self.broker_url).scheme
        if scheme not in ("redis", "rediss", "amqp", "amqps", "pyamqp"):
            raise SettingsError(f"LOYALTY_BROKER_URL scheme {scheme!r} is not supported")

    @property
    def signing(self) -> bool:
        return bool(self.security_key)

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def secrets(self) -> list[str]:
        """Passwords embedded in the configured URLs, for log masking."""
        found = []
        for url in (self.database_url, self.broker_url, self.result_backend):
            password = urlsplit(url).password
            if password:
                found.append(password)
        return found


def env_names() -> list[str]:
    return [PREFIX + f.name.upper() for f in fields(Settings)]


def mask_url(url: str) -> str:
    """The URL with its password replaced, safe to print or log."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
