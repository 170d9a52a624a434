"""Table definitions. The migrations create them; a test checks both agree.

Invariants are declared here as CHECK constraints and unique indexes so that no
code path, including raw SQL, can write a ledger that does not add up. The
triggers that complete them (append-only ledger, balance chain, revision
increments) live in the first migration.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    MetaData,
    Numeric,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _ts(name: str) -> Column:
    return Column(name, DateTime(timezone=True), nullable=False, server_default=func.now())


def _id_len(column: str) -> CheckConstraint:
    return CheckConstraint(f"char_length({column}) BETWEEN 1 AND 256", name=f"{column}_length")


contacts = Table(
    "contacts",
    metadata,
    Column("contact_id", Text, primary_key=True),
    Column("member_id", Text, nullable=True),
    Column("email", Text, nullable=True),
    Column("name", Text, nullable=True),
    #: occurred_at of the event that last set the profile, so a late re-delivery
    #: of an old signup never overwrites newer details.
    Column("profile_at", DateTime(timezone=True), nullable=False),
    _ts("created_at"),
    _ts("updated_at"),
    _id_len("contact_id"),
    _id_len("member_id"),
    Index("uq_contacts_member_id", "member_id", unique=True,
          postgresql_where=text("member_id IS NOT NULL")),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")),
    Column("contact_id", Text, ForeignKey("contacts.contact_id"), nullable=False, unique=True),
    Column("balance", BigInteger, nullable=False, server_default="0"),
    Column("earned", BigInteger, nullable=False, server_default="0"),
    Column("adjusted", BigInteger, nullable=False, server_default="0"),
    Column("redeemed", BigInteger, nullable=False, server_default="0"),
    Column("expired", BigInteger, nullable=False, server_default="0"),
    Column("revision", BigInteger, nullable=False, server_default="1"),
    _ts("created_at"),
    _ts("updated_at"),
    _ts("last_activity_at"),
    CheckConstraint("balance >= 0", name="balance_not_negative"),
    CheckConstraint("earned >= 0 AND redeemed >= 0 AND expired >= 0", name="totals_not_negative"),
    CheckConstraint("balance = earned + adjusted - redeemed - expired", name="balance_adds_up"),
    CheckConstraint("revision >= 1", name="revision_positive"),
    CheckConstraint("id::text <> contact_id", name="id_is_not_contact_id"),
    CheckConstraint("balance <= 999999999", name="balance_at_most_max"),
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
    Column("revision", BigInteger, nullable=False, server_default="1"),
    _ts("created_at"),
    _ts("updated_at"),
    CheckConstraint("char_length(name) BETWEEN 1 AND 100", name="name_length"),
    CheckConstraint("trigger IN ('signup', 'order.completed')", name="trigger_known"),
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
    # One active rule per trigger and currency, so the applied rule is never ambiguous.
    Index("uq_earn_rules_one_active", "trigger", text("coalesce(currency, '')"), unique=True,
          postgresql_where=text("status = 'ACTIVE'")),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")),
    #: Order of entries within the ledger; balance_after chains along it.
    Column("seq", BigInteger, Identity(always=True), nullable=False, unique=True),
    Column("account_id", UUID(as_uuid=True), ForeignKey("accounts.id"), nullable=False),
    Column("type", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("balance_after", BigInteger, nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    #: 'event:<event_id>' for an event's entry (unique with its event_id), else unique.
    Column("idempotency_key", Text, nullable=False),
    # EARN source
    Column("event_type", Text, nullable=True),
    Column("event_id", Text, nullable=True, unique=True),
    Column("order_id", Text, nullable=True),
    Column("rule_id", BigInteger, nullable=True),
    Column("rule_revision", BigInteger, nullable=True),
    #: What an order EARN was computed from, so `verify` can compute it again.
    Column("order_total", Numeric(18, 4), nullable=True),
    Column("currency", Text, nullable=True),
    # ADJUST source
    Column("actor", Text, nullable=True),
    Column("balance_before", BigInteger, nullable=True),
    #: The account's revision after this entry: revisions chain like balances.
    Column("account_revision", BigInteger, nullable=False),
    _ts("created_at"),
    # An EARN's event type is its rule's trigger.
    ForeignKeyConstraint(["rule_id", "event_type"], ["earn_rules.id", "earn_rules.trigger"],
                         name="fk_ledger_entries_rule_id_earn_rules"),
    CheckConstraint("type IN ('EARN', 'ADJUST', 'REDEEM', 'REFUND', 'EXPIRE')", name="type_known"),
    CheckConstraint("event_type IS NULL OR event_type IN ('signup', 'order.completed')",
                    name="event_type_known"),
    CheckConstraint("seq > 0", name="seq_positive"),
    CheckConstraint("account_revision >= 2", name="account_revision_after_first"),
    CheckConstraint(
        "(type IN ('EARN', 'REFUND') AND amount > 0) OR (type IN ('REDEEM', 'EXPIRE') AND amount < 0)"
        " OR type = 'ADJUST'",
        name="amount_sign",
    ),
    CheckConstraint("balance_after >= 0", name="balance_after_not_negative"),
    CheckConstraint("balance_after <= 999999999", name="balance_after_at_most_max"),
    CheckConstraint("type <> 'EARN' OR amount <= 9999999", name="earn_at_most_max"),
    CheckConstraint("char_length(description) <= 256", name="description_length"),
    CheckConstraint(
        "type <> 'EARN' OR (event_type IS NOT NULL AND event_id IS NOT NULL"
        " AND rule_id IS NOT NULL AND rule_revision IS NOT NULL)",
        name="earn_has_source",
    ),
    CheckConstraint("event_type IS DISTINCT FROM 'order.completed' OR order_id IS NOT NULL",
                    name="order_earn_has_order"),
    CheckConstraint("type <> 'ADJUST' OR (actor IS NOT NULL AND balance_before IS NOT NULL)",
                    name="adjust_has_source"),
    CheckConstraint("balance_before IS NULL OR balance_before + amount = balance_after",
                    name="adjust_adds_up"),
    CheckConstraint("(event_id IS NULL AND NOT starts_with(idempotency_key, 'event:'))"
                    " OR (event_id IS NOT NULL AND idempotency_key = 'event:' || event_id)",
                    name="event_key"),
    Index("uq_ledger_entries_idempotency_key", "idempotency_key", unique=True,
          postgresql_where=text("event_id IS NULL")),
    Index("ix_ledger_entries_account_seq", "account_id", "seq"),
    # Signup earns once per account; an order earns once per account, whatever its event_id.
    Index("uq_ledger_entries_one_signup", "account_id", unique=True,
          postgresql_where=text("type = 'EARN' AND event_type = 'signup'")),
    Index("uq_ledger_entries_one_order", "account_id", "order_id", unique=True,
          postgresql_where=text("type = 'EARN' AND order_id IS NOT NULL")),
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
    _ts("recorded_at"),
)

#: Every event the worker has accepted, with a fingerprint of its payload, so a
#: re-delivery is recognised and a re-used event_id with other content is a conflict.
processed_events = Table(
    "processed_events",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("event_type", Text, nullable=False),
    Column("fingerprint", Text, nullable=False),
    Column("contact_id", Text, nullable=False),
    Column("account_id", UUID(as_uuid=True), ForeignKey("accounts.id"), nullable=False),
    Column("order_id", Text, nullable=True),
    Column("outcome", Text, nullable=False),
    Column("points", BigInteger, nullable=False, server_default="0"),
    Column("ledger_entry_id", UUID(as_uuid=True), ForeignKey("ledger_entries.id"), nullable=True),
    _ts("processed_at"),
    #: The event as accepted (normalised), for `loyalty events list`; NULL before 0006.
    Column("payload", JSONB, nullable=True),
    #: What an outcome needs said: both totals of a `duplicate_order_changed`.
    Column("detail", JSONB, nullable=True),
    _id_len("event_id"),
    CheckConstraint(
        "outcome IN ('earned', 'duplicate_order', 'duplicate_order_changed', 'already_signed_up',"
        " 'no_points', 'no_rule')",
        name="outcome_known",
    ),
    CheckConstraint("(outcome = 'earned') = (ledger_entry_id IS NOT NULL AND points > 0)",
                    name="earned_has_entry"),
)

#: First result of every adjust_points request_id, returned again on repeats.
adjust_requests = Table(
    "adjust_requests",
    metadata,
    Column("request_id", Text, primary_key=True),
    Column("fingerprint", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("reason", Text, nullable=True),
    Column("ledger_entry_id", UUID(as_uuid=True), ForeignKey("ledger_entries.id"), nullable=True),
    Column("result", JSONB, nullable=False),
    _ts("created_at"),
    _id_len("request_id"),
    CheckConstraint("status IN ('applied', 'rejected')", name="status_known"),
    CheckConstraint("(status = 'applied') = (ledger_entry_id IS NOT NULL)", name="applied_has_entry"),
)

#: Messages that could not be applied. Kept forever; replay and discard only change status.
dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("task_name", Text, nullable=True),
    Column("message_id", Text, nullable=True),
    #: The message body as received, as text: JSON that PostgreSQL's jsonb would
    #: refuse (a \u0000) must still be kept verbatim.
    Column("payload", Text, nullable=False),
    Column("headers", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("reason", Text, nullable=False),
    Column("error_detail", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="1"),
    _ts("first_failed_at"),
    _ts("last_failed_at"),
    Column("status", Text, nullable=False, server_default="pending"),
    Column("replay_outcome", JSONB, nullable=True),
    Column("discarded_by", Text, nullable=True),
    Column("discard_reason", Text, nullable=True),
    Column("replayed_at", DateTime(timezone=True), nullable=True),
    Column("discarded_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("status IN ('pending', 'replayed', 'discarded')", name="status_known"),
    CheckConstraint("attempts >= 1", name="attempts_positive"),
    Index("uq_dead_letters_message_id", "message_id", unique=True,
          postgresql_where=text("message_id IS NOT NULL")),
    Index("ix_dead_letters_reason_status", "reason", "status"),
    Index("ix_dead_letters_status_id", "status", "id"),
    CheckConstraint("(status = 'discarded') = (discarded_at IS NOT NULL AND discarded_by IS NOT NULL"
                    " AND discard_reason IS NOT NULL)", name="discard_is_explained"),
    CheckConstraint("status <> 'replayed' OR replayed_at IS NOT NULL", name="replay_has_time"),
)

#: How often a message killed its worker process (or hit the hard time limit).
#: Written only on that path, so the normal path pays nothing for poison detection.
message_crashes = Table(
    "message_crashes",
    metadata,
    Column("message_id", Text, primary_key=True),
    Column("task_name", Text, nullable=True),
    Column("crashes", Integer, nullable=False),
    Column("last_error", Text, nullable=False),
    _ts("first_crashed_at"),
    _ts("last_crashed_at"),
    CheckConstraint("crashes >= 1", name="crashes_positive"),
)

#: Outgoing events (migration 0010), written only by triggers on `ledger_entries` and
#: `accounts` in the transaction of the change; the relay marks them delivered.
OUTBOX_EVENT_TYPES = ("account.created", "account.points_updated", "account.tier_changed",
                      "points.expiring_soon", "redemption.created", "redemption.refunded")
_OUTBOX_TYPES_SQL = ", ".join(f"'{t}'" for t in OUTBOX_EVENT_TYPES)

outbox_events = Table(
    "outbox_events",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")),
    #: Insertion order; with account_revision, the order of one account's events.
    Column("position", BigInteger, Identity(always=True), nullable=False, unique=True),
    Column("type", Text, nullable=False),
    Column("account_id", UUID(as_uuid=True), nullable=False),
    Column("contact_id", Text, nullable=False),
    Column("account_revision", BigInteger, nullable=False),
    _ts("occurred_at"),
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
    _ts("created_at"),
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
    _ts("next_attempt_at"),
    #: Retries stop LOYALTY_WEBHOOK_RETRY_FOR after it; a redelivery starts a new window.
    _ts("retry_from"),
    _ts("created_at"),
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

__all__ = [
    "accounts",
    "adjust_requests",
    "contacts",
    "dead_letters",
    "earn_rules",
    "ledger_entries",
    "message_crashes",
    "metadata",
    "outbox_events",
    "processed_events",
    "webhook_deliveries",
    "webhook_subscriptions",
]
