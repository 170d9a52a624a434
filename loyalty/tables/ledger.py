"""Contacts, their accounts, and the append-only ledger whose entries move their points."""

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
    Numeric,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import UUID

from loyalty.tables.base import id_length, metadata, timestamp

#: An activity event's EARN names its activity (its rule's, by foreign key); otherwise only
#: a staff EARN (no event) carries an activity (0008); a reference only on an activity's.
ACTIVITY_EARN_CHECK = ("(event_type IS DISTINCT FROM 'activity' OR activity IS NOT NULL)"
                       " AND (activity IS NULL OR (type = 'EARN'"
                       " AND (event_type = 'activity' OR event_type IS NULL)))"
                       " AND (reference_id IS NULL OR event_type = 'activity')")

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
    timestamp("created_at"),
    timestamp("updated_at"),
    id_length("contact_id"),
    id_length("member_id"),
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
    #: Points taken back because orders were refunded (REVERSE entries), migration 0009.
    Column("reversed", BigInteger, nullable=False, server_default="0"),
    Column("revision", BigInteger, nullable=False, server_default="1"),
    timestamp("created_at"),
    timestamp("updated_at"),
    timestamp("last_activity_at"),
    CheckConstraint("balance >= 0", name="balance_not_negative"),
    CheckConstraint("earned >= 0 AND redeemed >= 0 AND expired >= 0", name="totals_not_negative"),
    CheckConstraint("balance = earned + adjusted - redeemed - expired - reversed",
                    name="balance_adds_up"),
    CheckConstraint("reversed >= 0", name="reversed_not_negative"),
    CheckConstraint("revision >= 1", name="revision_positive"),
    CheckConstraint("id::text <> contact_id", name="id_is_not_contact_id"),
    CheckConstraint("balance <= 999999999", name="balance_at_most_max"),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    #: Time-ordered (UUIDv7, 0013): new entries land on the right-hand edge of the key.
    Column("id", UUID(as_uuid=True), primary_key=True,
           server_default=text("loyalty_uuid7()")),
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
    # ADJUST, staff EARN, REDEEM and REFUND source
    Column("actor", Text, nullable=True),
    #: The activity an EARN was for: a staff earn's (no event, no rule; 0008), or an
    #: activity event's, which must be its rule's (0009).
    Column("activity", Text, nullable=True),
    #: The REDEEM entry a REFUND gives back; at most one REFUND per REDEEM.
    Column("refunds_entry_id", UUID(as_uuid=True), ForeignKey("ledger_entries.id"),
           nullable=True),
    Column("balance_before", BigInteger, nullable=True),
    # activity EARN source (0009): the reference it earns once for
    Column("reference_id", Text, nullable=True),
    # REVERSE source (0009): the refund, and the order's EARN it takes points back from
    Column("refund_id", Text, nullable=True),
    Column("reverses_entry_id", UUID(as_uuid=True), ForeignKey("ledger_entries.id"),
           nullable=True),
    #: The account's revision after this entry: revisions chain like balances.
    Column("account_revision", BigInteger, nullable=False),
    #: The tier an EARN was computed at, when its rule had points for that tier (0011).
    Column("tier_id", BigInteger, nullable=True),
    timestamp("created_at"),
    # An EARN's event type is its rule's trigger.
    ForeignKeyConstraint(["rule_id", "event_type"], ["earn_rules.id", "earn_rules.trigger"],
                         name="fk_ledger_entries_rule_id_earn_rules"),
    # An activity EARN's activity is its rule's.
    ForeignKeyConstraint(["rule_id", "activity"], ["earn_rules.id", "earn_rules.activity"],
                         name="fk_ledger_entries_rule_id_activity_earn_rules"),
    CheckConstraint("type IN ('EARN', 'ADJUST', 'REDEEM', 'REFUND', 'EXPIRE', 'REVERSE')",
                    name="type_known"),
    CheckConstraint("event_type IS NULL OR event_type IN ('signup', 'order.completed', 'activity',"
                    " 'order.refunded')", name="event_type_known"),
    CheckConstraint("seq > 0", name="seq_positive"),
    CheckConstraint("account_revision >= 2", name="account_revision_after_first"),
    CheckConstraint(
        "(type IN ('EARN', 'REFUND') AND amount > 0)"
        " OR (type IN ('REDEEM', 'EXPIRE', 'REVERSE') AND amount < 0) OR type = 'ADJUST'",
        name="amount_sign",
    ),
    CheckConstraint("balance_after >= 0", name="balance_after_not_negative"),
    CheckConstraint("balance_after <= 999999999", name="balance_after_at_most_max"),
    CheckConstraint("type <> 'EARN' OR amount <= 9999999", name="earn_at_most_max"),
    CheckConstraint("char_length(description) <= 256", name="description_length"),
    CheckConstraint(
        "type <> 'EARN' OR (event_type IS NOT NULL AND event_id IS NOT NULL"
        " AND rule_id IS NOT NULL AND rule_revision IS NOT NULL)"
        " OR (activity IS NOT NULL AND actor IS NOT NULL AND event_type IS NULL"
        " AND event_id IS NULL AND rule_id IS NULL AND rule_revision IS NULL)",
        name="earn_has_source",
    ),
    CheckConstraint("char_length(activity) BETWEEN 1 AND 100", name="activity_length"),
    CheckConstraint("(type = 'REFUND') = (refunds_entry_id IS NOT NULL)",
                    name="refund_names_redeem"),
    CheckConstraint("type NOT IN ('REDEEM', 'REFUND') OR actor IS NOT NULL",
                    name="staff_entry_has_actor"),
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
    # 0009: activities and refunds.
    CheckConstraint(ACTIVITY_EARN_CHECK,
                    name="activity_earn_has_activity"),
    CheckConstraint("(type = 'REVERSE') = (reverses_entry_id IS NOT NULL) AND (type <> 'REVERSE'"
                    " OR (event_type = 'order.refunded' AND event_id IS NOT NULL"
                    " AND order_id IS NOT NULL AND refund_id IS NOT NULL))",
                    name="reverse_has_source"),
    # An activity with a reference earns once per account, activity and reference.
    Index("uq_ledger_entries_one_activity_reference", "account_id", "activity", "reference_id",
          unique=True, postgresql_where=text("type = 'EARN' AND reference_id IS NOT NULL")),
    # A refund reverses once; and the sums of an order's (and account's) reversals.
    Index("uq_ledger_entries_one_reversal", "account_id", "order_id", "refund_id", unique=True,
          postgresql_where=text("type = 'REVERSE'")),
    # At most one REFUND per REDEEM; partial (0013): no other entry has the column.
    Index("uq_ledger_entries_refunds_entry_id", "refunds_entry_id", unique=True,
          postgresql_where=text("refunds_entry_id IS NOT NULL")),
)

#: Each account's per-type sums of its ledger, kept by a trigger as entries are inserted
#: (the application may only read it); at COMMIT an account's totals must equal them.
ledger_totals = Table(
    "ledger_totals",
    metadata,
    Column("account_id", UUID(as_uuid=True), ForeignKey("accounts.id"), primary_key=True),
    Column("earned", BigInteger, nullable=False, server_default="0"),
    Column("adjusted", BigInteger, nullable=False, server_default="0"),
    Column("redeemed", BigInteger, nullable=False, server_default="0"),
    Column("expired", BigInteger, nullable=False, server_default="0"),
    Column("reversed", BigInteger, nullable=False, server_default="0"),
)

#: Every refund of an order, once per (account, order, refund_id) (migration 0009): what it
#: was due to take back, what it took (its REVERSE entry, if it took any) and the shortfall.
order_refunds = Table(
    "order_refunds",
    metadata,
    Column("account_id", UUID(as_uuid=True), ForeignKey("accounts.id"), primary_key=True),
    Column("order_id", Text, primary_key=True),
    Column("refund_id", Text, primary_key=True),
    Column("event_id", Text, ForeignKey("processed_events.event_id"), nullable=False, unique=True),
    Column("amount", Numeric(18, 4), nullable=False),
    Column("currency", Text, nullable=False),
    #: The order's EARN; NULL when the order earned no points.
    Column("earn_entry_id", UUID(as_uuid=True), ForeignKey("ledger_entries.id"), nullable=True),
    #: This refund's REVERSE; NULL when it took nothing.
    Column("reverse_entry_id", UUID(as_uuid=True), ForeignKey("ledger_entries.id"),
           nullable=True, unique=True),
    Column("due", BigInteger, nullable=False),
    Column("taken", BigInteger, nullable=False),
    Column("shortfall", BigInteger, nullable=False),
    #: What a refund cancelled of the order's pending points (0011): no entry needed.
    Column("cancelled", BigInteger, nullable=False, server_default="0"),
    timestamp("created_at"),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency_code"),
    CheckConstraint("due >= 0 AND taken >= 0 AND shortfall >= 0 AND cancelled >= 0"
                    " AND due = taken + shortfall + cancelled", name="due_adds_up"),
    CheckConstraint("(taken > 0) = (reverse_entry_id IS NOT NULL)", name="taken_has_entry"),
    CheckConstraint("earn_entry_id IS NOT NULL OR due = cancelled", name="due_has_earn"),
)
