"""The rewards catalogue, and the redemptions that spend points on it."""

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
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from loyalty.tables.base import id_length, metadata, timestamp

#: The rewards catalogue: what points can be redeemed for.
rewards = Table(
    "rewards",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("name", Text, nullable=False),
    Column("kind", Text, nullable=False),
    #: Money off (discount_amount, with its currency) or a percentage (discount_percent).
    Column("value", Numeric(18, 4), nullable=True),
    Column("currency", Text, nullable=True),
    Column("cost_in_points", BigInteger, nullable=False),
    #: What it costs at each tier instead (0011): {"<tier id>": points}.
    Column("tier_costs", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("status", Text, nullable=False, server_default="ACTIVE"),
    Column("revision", BigInteger, nullable=False, server_default="1"),
    timestamp("created_at"),
    timestamp("updated_at"),
    CheckConstraint("char_length(name) BETWEEN 1 AND 100", name="name_length"),
    CheckConstraint("kind IN ('discount_amount', 'discount_percent', 'free_shipping', 'custom')",
                    name="kind_known"),
    CheckConstraint(
        "(kind = 'discount_amount' AND value > 0 AND currency IS NOT NULL)"
        " OR (kind = 'discount_percent' AND value BETWEEN 1 AND 100 AND currency IS NULL)"
        " OR (kind IN ('free_shipping', 'custom') AND value IS NULL AND currency IS NULL)",
        name="kind_shape"),
    CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency_code"),
    CheckConstraint("cost_in_points BETWEEN 1 AND 9999999", name="cost_in_points_range"),
    CheckConstraint("jsonb_typeof(tier_costs) = 'object'", name="tier_costs_object"),
    CheckConstraint("status IN ('ACTIVE', 'PAUSED')", name="status_known"),
    CheckConstraint("revision >= 1", name="revision_positive"),
)

#: One per REDEEM entry, one to one (triggers of migration 0008); ISSUED, then perhaps
#: REFUNDED, and nothing else of it ever changes.
redemptions = Table(
    "redemptions",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True, server_default=text("loyalty_uuid7()")),
    Column("account_id", UUID(as_uuid=True), ForeignKey("accounts.id"), nullable=False),
    #: NULL when redeemed by `amount` rather than for a reward.
    Column("reward_id", BigInteger, ForeignKey("rewards.id"), nullable=True),
    Column("reward_revision", BigInteger, nullable=True),
    Column("points", BigInteger, nullable=False),
    Column("count", Integer, nullable=False),
    Column("code", Text, nullable=False, unique=True),
    Column("status", Text, nullable=False, server_default="ISSUED"),
    Column("reference_id", Text, nullable=True),
    Column("request_id", Text, nullable=False, unique=True),
    Column("actor", Text, nullable=False),
    Column("redeem_entry_id", UUID(as_uuid=True), ForeignKey("ledger_entries.id"),
           nullable=False, unique=True),
    Column("refund_entry_id", UUID(as_uuid=True), ForeignKey("ledger_entries.id"),
           nullable=True, unique=True),
    timestamp("created_at"),
    Column("refunded_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("points BETWEEN 1 AND 999999999", name="points_range"),
    CheckConstraint("count BETWEEN 1 AND 100", name="count_range"),
    CheckConstraint("reward_id IS NOT NULL OR count = 1", name="amount_is_one"),
    CheckConstraint("(reward_id IS NULL) = (reward_revision IS NULL)",
                    name="reward_has_revision"),
    CheckConstraint("code ~ '^[2-9A-HJKMNP-TV-Z]{4}(-[2-9A-HJKMNP-TV-Z]{4}){3}$'",
                    name="code_format"),
    CheckConstraint("status IN ('ISSUED', 'REFUNDED')", name="status_known"),
    CheckConstraint("(status = 'REFUNDED') = (refund_entry_id IS NOT NULL"
                    " AND refunded_at IS NOT NULL)", name="refund_shape"),
    CheckConstraint("char_length(reference_id) BETWEEN 1 AND 256", name="reference_id_length"),
    id_length("request_id"),
    Index("ix_redemptions_account_id_created_at", "account_id", "created_at"),
)
