"""The program's terms: its settings, earn rules, tiers, and the point lots credits become."""

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
    Numeric,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from loyalty.tables.base import metadata, timestamp

#: Inactivity expiration takes 1 to 12 months and a percentage; lots take 1 to 60 months.
PROGRAM_EXPIRATION_CHECK = (
    "expiration_mode = 'off'"
    " OR (expiration_mode = 'inactivity' AND expiration_months BETWEEN 1 AND 12"
    " AND expiration_percentage IS NOT NULL)"
    " OR (expiration_mode = 'lots' AND expiration_months IS NOT NULL)")

#: The program's settings (migration 0011): one row, edited with `loyalty program set`,
#: its bounds those of `loyalty.program`, checked here again for any writer.
program = Table(
    "program",
    metadata,
    Column("id", Integer, primary_key=True, server_default="1"),
    Column("pending_days", Integer, nullable=False, server_default="0"),
    Column("expiration_mode", Text, nullable=False, server_default="off"),
    Column("expiration_months", Integer, nullable=True),
    Column("expiration_percentage", Integer, nullable=True),
    Column("tiers_status", Text, nullable=False, server_default="DISABLED"),
    Column("rolling_window_months", Integer, nullable=False, server_default="12"),
    Column("revision", BigInteger, nullable=False, server_default="1"),
    timestamp("updated_at"),
    CheckConstraint("id = 1", name="one_row"),
    CheckConstraint("pending_days BETWEEN 0 AND 90", name="pending_days_range"),
    CheckConstraint(PROGRAM_EXPIRATION_CHECK, name="expiration_shape"),
    CheckConstraint("expiration_months BETWEEN 1 AND 60", name="expiration_months_range"),
    CheckConstraint("expiration_percentage BETWEEN 1 AND 100", name="expiration_percentage_range"),
    CheckConstraint("tiers_status IN ('ACTIVE', 'PAUSED', 'DISABLED')", name="tiers_status_known"),
    CheckConstraint("rolling_window_months BETWEEN 1 AND 36", name="rolling_window_range"),
    CheckConstraint("revision >= 1", name="revision_positive"),
)

earn_rules = Table(
    "earn_rules",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("name", Text, nullable=False),
    Column("trigger", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("money_amount", Numeric(18, 4), nullable=True),
    Column("currency", Text, nullable=True),
    Column("status", Text, nullable=False, server_default="ACTIVE"),
    #: Tier id -> P at that tier instead of `points` (0011).
    Column("tier_points", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("revision", BigInteger, nullable=False, server_default="1"),
    timestamp("created_at"),
    timestamp("updated_at"),
    #: The activity an `activity` rule earns for (migration 0009); NULL for other triggers.
    Column("activity", Text, nullable=True),
    CheckConstraint("char_length(name) BETWEEN 1 AND 100", name="name_length"),
    CheckConstraint("trigger IN ('signup', 'order.completed', 'activity')", name="trigger_known"),
    CheckConstraint("(trigger = 'activity') = (activity IS NOT NULL)", name="activity_rule_names_activity"),
    CheckConstraint("trigger <> 'activity' OR (kind = 'fixed' AND currency IS NULL)",
                    name="activity_is_fixed"),
    CheckConstraint("char_length(activity) BETWEEN 1 AND 100", name="activity_length"),
    CheckConstraint("kind IN ('fixed', 'conversion')", name="kind_known"),
    CheckConstraint("status IN ('ACTIVE', 'PAUSED')", name="status_known"),
    CheckConstraint("points > 0 AND points <= 1000000000", name="points_range"),
    CheckConstraint(
        "(kind = 'fixed' AND money_amount IS NULL) OR (kind = 'conversion' AND money_amount > 0)",
        name="kind_shape",
    ),
    CheckConstraint("trigger <> 'signup' OR (kind = 'fixed' AND currency IS NULL)",
                    name="signup_is_fixed"),
    CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency_code"),
    CheckConstraint("revision >= 1", name="revision_positive"),
    UniqueConstraint("id", "trigger", name="uq_earn_rules_id_trigger"),
    UniqueConstraint("id", "activity", name="uq_earn_rules_id_activity"),
    # One active rule per trigger, currency and activity, so the applied rule is never
    # ambiguous.
    Index("uq_earn_rules_one_active", "trigger", text("coalesce(currency, '')"),
          text("coalesce(activity, '')"), unique=True,
          postgresql_where=text("status = 'ACTIVE'")),
    CheckConstraint("jsonb_typeof(tier_points) = 'object'", name="tier_points_object"),
)

#: Every revision of every earn rule, written by a trigger (the application may only read
#: it), so that each EARN can be recomputed from the terms it recorded.
earn_rule_revisions = Table(
    "earn_rule_revisions",
    metadata,
    Column("rule_id", BigInteger, ForeignKey("earn_rules.id"), primary_key=True),
    Column("revision", BigInteger, primary_key=True),
    Column("trigger", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("money_amount", Numeric(18, 4), nullable=True),
    Column("currency", Text, nullable=True),
    Column("status", Text, nullable=False),
    timestamp("recorded_at"),
    Column("activity", Text, nullable=True),
    Column("tier_points", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
)

#: Tier definitions (migration 0011): at most 20 (trigger `tiers_at_most_20`); the base
#: level is no tier.
tiers = Table(
    "tiers",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("required_points", BigInteger, nullable=False, unique=True),
    Column("description", Text, nullable=True),
    Column("revision", BigInteger, nullable=False, server_default="1"),
    timestamp("created_at"),
    timestamp("updated_at"),
    CheckConstraint("char_length(name) BETWEEN 1 AND 50", name="name_length"),
    CheckConstraint("required_points BETWEEN 1 AND 9999999", name="required_points_range"),
    CheckConstraint("char_length(description) <= 500", name="description_length"),
    CheckConstraint("revision >= 1", name="revision_positive"),
)

#: Each account's tier points over the rolling window and its tier (0011), written only by
#: `loyalty_recalculate_tiers` (the ledger's trigger and the periodic job).
account_tiers = Table(
    "account_tiers",
    metadata,
    Column("account_id", UUID(as_uuid=True), ForeignKey("accounts.id"), primary_key=True),
    Column("tier_id", BigInteger, ForeignKey("tiers.id", ondelete="SET NULL"), nullable=True),
    Column("points", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("points >= 0", name="points_not_negative"),
)

#: A credit's points until they are used up (migration 0011): the ledger's trigger
#: `ledger_entries_lots` writes and consumes lots; a deferred trigger holds the remaining
#: points of an account's available lots equal to its balance.
point_lots = Table(
    "point_lots",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("account_id", UUID(as_uuid=True), ForeignKey("accounts.id"), nullable=False),
    #: NULL for a balance that was there before lots (one opening lot per account).
    Column("entry_id", UUID(as_uuid=True), ForeignKey("ledger_entries.id"), nullable=True,
           unique=True),
    Column("amount", BigInteger, nullable=False),
    Column("remaining", BigInteger, nullable=False),
    Column("status", Text, nullable=False, server_default="available"),
    Column("available_at", DateTime(timezone=True), nullable=False),
    #: An order's pending lot (0011) keeps what its EARN will say when it becomes available.
    Column("order_id", Text, nullable=True),
    Column("event_id", Text, nullable=True),
    Column("rule_id", BigInteger, nullable=True),
    Column("rule_revision", BigInteger, nullable=True),
    Column("order_total", Numeric(18, 4), nullable=True),
    Column("currency", Text, nullable=True),
    timestamp("created_at"),
    Column("tier_id", BigInteger, nullable=True),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("status <> 'pending' OR (entry_id IS NULL AND order_id IS NOT NULL"
                    " AND event_id IS NOT NULL AND rule_id IS NOT NULL"
                    " AND rule_revision IS NOT NULL)", name="pending_shape"),
    Index("uq_point_lots_one_order", "account_id", "order_id", unique=True,
          postgresql_where=text("order_id IS NOT NULL")),
    Index("ix_point_lots_pending_until", "available_at",
          postgresql_where=text("remaining > 0 AND status = 'pending'")),
    CheckConstraint("remaining BETWEEN 0 AND amount", name="remaining_range"),
    CheckConstraint("status IN ('pending', 'available')", name="status_known"),
    Index("ix_point_lots_open", "account_id", "available_at", "id",
          postgresql_where=text("remaining > 0")),
    Index("ix_point_lots_open_since", "available_at",
          postgresql_where=text("remaining > 0 AND status = 'available'")),
)

#: What each account's lots hold, available and pending (0013): kept by statement
#: triggers on `point_lots` (the application may only read it), and what the COMMIT check
#: `point_lots_match_balance` compares the balance with.
lot_totals = Table(
    "lot_totals",
    metadata,
    Column("account_id", UUID(as_uuid=True), ForeignKey("accounts.id"), primary_key=True),
    Column("available", BigInteger, nullable=False, server_default="0"),
    Column("pending", BigInteger, nullable=False, server_default="0"),
    CheckConstraint("available >= 0 AND pending >= 0", name="not_negative"),
)

#: `points.expiring_soon` sent (migration 0012): one row per lot, or per account and quiet
#: period, written with its event by `loyalty_warn_expiring` only; the key makes it once.
expiry_warnings = Table(
    "expiry_warnings",
    metadata,
    Column("key", Text, primary_key=True),
    Column("account_id", UUID(as_uuid=True), ForeignKey("accounts.id"), nullable=False),
    Column("expiration_date", DateTime(timezone=True), nullable=False),
    Column("expiring_points", BigInteger, nullable=False),
    timestamp("created_at"),
    CheckConstraint("expiring_points > 0", name="expiring_points_positive"),
)
