"""Outgoing events and the webhooks they are delivered to."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from loyalty.tables.base import metadata, timestamp

#: Outgoing events (migration 0010), written only by triggers on `ledger_entries` and
#: `accounts` in the transaction of the change; the relay marks them delivered.
OUTBOX_EVENT_TYPES = ("account.created", "account.points_updated", "account.tier_changed",
                      "points.expiring_soon", "redemption.created", "redemption.refunded")
_OUTBOX_TYPES_SQL = ", ".join(f"'{t}'" for t in OUTBOX_EVENT_TYPES)

outbox_events = Table(
    "outbox_events",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True, server_default=text("loyalty_uuid7()")),
    #: Insertion order; with account_revision, the order of one account's events.
    Column("position", BigInteger, Identity(always=True), nullable=False, unique=True),
    Column("type", Text, nullable=False),
    Column("account_id", UUID(as_uuid=True), nullable=False),
    Column("contact_id", Text, nullable=False),
    Column("account_revision", BigInteger, nullable=False),
    timestamp("occurred_at"),
    Column("data", JSONB, nullable=False),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    CheckConstraint(f"type IN ({_OUTBOX_TYPES_SQL})", name="type_known"),
    Index("ix_outbox_events_pending", "account_id", "account_revision", "position",
          postgresql_where=text("delivered_at IS NULL")),
    Index("ix_outbox_events_pending_position", "position",
          postgresql_where=text("delivered_at IS NULL")),
    Index("ix_outbox_events_delivered_at", "delivered_at",
          postgresql_where=text("delivered_at IS NOT NULL")),
)

webhook_subscriptions = Table(
    "webhook_subscriptions",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("url", Text, nullable=False),
    #: NULL: every event type.
    Column("event_types", ARRAY(Text), nullable=True),
    Column("secret", Text, nullable=False),
    timestamp("created_at"),
    Column("removed_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("char_length(url) BETWEEN 8 AND 2048 AND url ~ '^https?://'", name="url_shape"),
    CheckConstraint(f"event_types IS NULL OR (cardinality(event_types) >= 1"
                    f" AND event_types <@ ARRAY[{_OUTBOX_TYPES_SQL}]::text[])",
                    name="event_types_known"),
    CheckConstraint("secret ~ '^whsec_[A-Za-z0-9+/=]{16,}$'", name="secret_shape"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("subscription_id", BigInteger, ForeignKey("webhook_subscriptions.id"), nullable=False),
    Column("event_id", UUID(as_uuid=True), nullable=False),
    Column("event_type", Text, nullable=False),
    Column("account_id", UUID(as_uuid=True), nullable=False),
    Column("account_revision", BigInteger, nullable=False),
    Column("event_position", BigInteger, nullable=False),
    #: The exact body signed and sent: retries and redeliveries send the same bytes.
    Column("body", Text, nullable=False),
    Column("status", Text, nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    timestamp("next_attempt_at"),
    #: Retries stop LOYALTY_WEBHOOK_RETRY_FOR after it; a redelivery starts a new window.
    timestamp("retry_from"),
    timestamp("created_at"),
    Column("last_attempt_at", DateTime(timezone=True), nullable=True),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status_known"),
    CheckConstraint("attempts >= 0", name="attempts_positive"),
    CheckConstraint("(status = 'delivered') = (delivered_at IS NOT NULL)", name="delivered_has_time"),
    UniqueConstraint("subscription_id", "event_id"),
    Index("ix_webhook_deliveries_pending", "subscription_id", "account_id", "account_revision",
          "event_position", postgresql_where=text("status = 'pending'")),
    Index("ix_webhook_deliveries_status_id", "status", "id"),
)
