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
from loyalty.schedule import DEFAULT as DEFAULT_SCHEDULE
from loyalty.schedule import parse_schedule

PREFIX = "LOYALTY_"


@dataclass(frozen=True)
class Settings:
    #: SQLAlchemy URL of the ledger database (psycopg 3 driver), as the application
    #: role: what the worker and the command line connect as. It may read and append,
    #: never alter the schema (see `loyalty db create-roles`).
    database_url: str = "postgresql+psycopg://loyalty_app@127.0.0.1:5432/loyalty"
    #: The same database as the role that owns the schema: used only by
    #: `loyalty db upgrade` and `loyalty db downgrade`, which also grant the
    #: application role (the user of LOYALTY_DATABASE_URL) what it needs.
    owner_database_url: str = "postgresql+psycopg://loyalty_owner@127.0.0.1:5432/loyalty"
    #: A superuser connection, used only by `loyalty db create-roles` to create the
    #: two roles and the database.
    bootstrap_database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    #: Celery broker: redis://... (default) or amqp://... for RabbitMQ.
    broker_url: str = "redis://127.0.0.1:6379/0"
    #: RabbitMQ only: "classic" queues, or "quorum" queues (replicated by Raft across a
    #: cluster). Producers must declare the same type (docs/operations.md).
    queue_type: Literal["classic", "quorum"] = "classic"
    #: Where adjust_points results are stored for the caller to read.
    result_backend: str = "redis://127.0.0.1:6379/1"
    #: Redis: seconds a consumer may go without a heartbeat before the messages it holds
    #: are given to other consumers (worker.redis_reliable), and before kombu re-delivers
    #: an unacknowledged message recorded the stock way. Must exceed the task time limit.
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
    #: Largest message body the worker reads, in bytes. A larger one is kept as a
    #: `message_too_large` dead letter (its size, SHA-256 and first 64 KiB), never decoded.
    max_message_bytes: int = 262_144
    #: Bytes of messages the worker's main process may hold at once (prefetched and
    #: buffered): the prefetch is lowered so that it cannot pass this, counting every
    #: message not yet received as the largest allowed. The default leaves room for
    #: the 2,048 messages that two batches of single events on two processes need.
    max_prefetch_bytes: int = 536_870_912
    log_level: str = "INFO"
    #: "json" for one JSON object per line, "text" for humans.
    log_format: Literal["json", "text"] = "json"
    #: Optional Celery message signing (the "auth" serializer): paths to this
    #: worker's private key, its certificate, and a folder of trusted certificates.
    #: All three or none. When set, unsigned messages are refused and dead-lettered.
    security_key: str = ""
    security_certificate: str = ""
    security_cert_store: str = ""
    #: Celery's remote control (broadcast commands such as `shutdown`, `revoke`,
    #: `inspect`). Off by default: a broadcast goes to every worker, and anyone who may
    #: publish on the broker could send one. Only allowed with message signing, so
    #: that only signed control messages are accepted.
    remote_control: bool = False
    #: With message signing configured: accept plain JSON events from shops on
    #: `loyalty.events`, and only signed messages for everything else (admin tasks,
    #: anything on `loyalty.admin`). Off: with signing, every message must be signed.
    require_signed_admin: bool = False
    # -- outgoing events, metrics and health (docs/operations.md) -----------------------
    #: How long an idle relay (`loyalty relay`) waits before looking for events again, in ms.
    relay_interval_ms: int = 500
    #: Outbox events a relay takes per transaction (whole accounts' worth).
    relay_batch_size: int = 500
    #: Seconds delivered outbox events and delivered webhook deliveries are kept before
    #: the relay prunes them (failed deliveries are kept).
    outbox_retention: int = 604_800
    #: Seconds a webhook delivery is retried (exponential backoff) before it is failed.
    webhook_retry_for: int = 86_400
    #: First retry delay of a webhook delivery, in seconds; doubles up to the maximum.
    webhook_backoff: float = 5.0
    webhook_backoff_max: float = 3600.0
    #: Seconds for a webhook request (connect, write, read each).
    webhook_timeout: float = 10.0
    #: Let webhooks target loopback, private, link-local and metadata addresses. Off:
    #: the service cannot be pointed at itself or at the cloud metadata endpoint.
    webhook_allow_private: bool = False
    #: Port of the worker's (and the relay's) Prometheus `/metrics`; 0 (unset): off.
    metrics_port: int = 0
    #: Address `/metrics` listens on (0.0.0.0 in a container, behind a published port).
    metrics_host: str = "127.0.0.1"
    #: prometheus_client's multiprocess directory; empty: a fresh temporary one.
    metrics_dir: str = ""
    #: File the worker's main process touches every few seconds; `loyalty health` reads it.
    #: One per worker on a host. /tmp is the usual place in a container.
    heartbeat_file: str = "/tmp/loyalty-worker.heartbeat"  # noqa: S108
    #: Seconds after which `loyalty health` calls the heartbeat stale.
    heartbeat_max_age: int = 30
    # -- the periodic program jobs (docs/operations.md) ----------------------------------
    #: Days before points expire that the `loyalty.program.expire_points` run sends
    #: `points.expiring_soon` for them (once per lot, or per account and quiet period).
    expiring_soon_days: int = 7
    #: What `loyalty beat` sends and how often: `task=seconds` pairs, comma-separated.
    beat_schedule: str = DEFAULT_SCHEDULE
    #: Where `loyalty beat` keeps when each job last ran (Celery beat's schedule file).
    beat_schedule_file: str = "/tmp/loyalty-beat-schedule"  # noqa: S108

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
        if not 1024 <= self.max_message_bytes <= 64 * 1024 * 1024:
            raise SettingsError("LOYALTY_MAX_MESSAGE_BYTES must be between 1024 and 67108864")
        if self.max_prefetch_bytes < self.max_message_bytes:
            raise SettingsError("LOYALTY_MAX_PREFETCH_BYTES must be at least "
                                "LOYALTY_MAX_MESSAGE_BYTES")
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
        if self.remote_control and not self.signing:
            raise SettingsError("LOYALTY_REMOTE_CONTROL needs message signing: set "
                                "LOYALTY_SECURITY_KEY, LOYALTY_SECURITY_CERTIFICATE and "
                                "LOYALTY_SECURITY_CERT_STORE, or turn remote control off")
        if self.require_signed_admin and not self.signing:
            raise SettingsError("LOYALTY_REQUIRE_SIGNED_ADMIN needs message signing: set "
                                "LOYALTY_SECURITY_KEY, LOYALTY_SECURITY_CERTIFICATE and "
                                "LOYALTY_SECURITY_CERT_STORE")
        if not 10 <= self.relay_interval_ms <= 60_000:
            raise SettingsError("LOYALTY_RELAY_INTERVAL_MS must be between 10 and 60000")
        if not 1 <= self.relay_batch_size <= 5000:
            raise SettingsError("LOYALTY_RELAY_BATCH_SIZE must be between 1 and 5000")
        if self.outbox_retention < 60 or self.webhook_retry_for < 0:
            raise SettingsError("LOYALTY_OUTBOX_RETENTION must be at least 60 and "
                                "LOYALTY_WEBHOOK_RETRY_FOR not negative")
        if not 0 < self.webhook_backoff <= self.webhook_backoff_max:
            raise SettingsError("LOYALTY_WEBHOOK_BACKOFF must be above 0 and at most "
                                "LOYALTY_WEBHOOK_BACKOFF_MAX")
        if not 0 < self.webhook_timeout <= 300:
            raise SettingsError("LOYALTY_WEBHOOK_TIMEOUT must be above 0 and at most 300")
        if not 0 <= self.metrics_port <= 65535:
            raise SettingsError("LOYALTY_METRICS_PORT must be a TCP port (0: off)")
        if self.heartbeat_max_age < 2:
            raise SettingsError("LOYALTY_HEARTBEAT_MAX_AGE must be at least 2")
        if not 1 <= self.expiring_soon_days <= 365:
            raise SettingsError("LOYALTY_EXPIRING_SOON_DAYS must be between 1 and 365")
        parse_schedule(self.beat_schedule)
        scheme = urlsplit(self.broker_url).scheme
        if scheme not in ("redis", "rediss", "amqp", "amqps", "pyamqp"):
            raise SettingsError(f"LOYALTY_BROKER_URL scheme {scheme!r} is not supported")
        if self.queue_type not in ("classic", "quorum"):
            raise SettingsError("LOYALTY_QUEUE_TYPE must be 'classic' or 'quorum'")
        if self.queue_type == "quorum" and scheme.startswith("redis"):
            raise SettingsError("LOYALTY_QUEUE_TYPE=quorum needs a RabbitMQ broker "
                                "(LOYALTY_BROKER_URL=amqp://...)")

    @property
    def signing(self) -> bool:
        return bool(self.security_key)

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def secrets(self) -> list[str]:
        """Passwords embedded in the configured URLs, for log masking."""
        found = []
        for url in (self.database_url, self.owner_database_url, self.bootstrap_database_url,
                    self.broker_url, self.result_backend):
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
