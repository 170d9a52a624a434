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

#: Inactivity expiration takes 1 to 12 months and a percentage; lots take 1 to 60 months.
PROGRAM_EXPIRATION_CHECK = (
    "expiration_mode = 'off'"
    " OR (expiration_mode = 'inactivity' AND expiration_months BETWEEN 1 AND 12"
    " AND expiration_percentage IS NOT NULL)"
    " OR (expiration_mode = 'lots' AND expiration_months IS NOT NULL)")

#: An activity event's EARN names its activity (its rule's, by foreign key); otherwise only
#: a staff EARN (no event) carries an activity (0008); a reference only on an activity's.
ACTIVITY_EARN_CHECK = ("(event_type IS DISTINCT FROM 'activity' OR activity IS NOT NULL)"
                       " AND (activity IS NULL OR (type = 'EARN'"
                       " AND (event_type = 'activity' OR event_type IS NULL)))"
                       " AND (reference_id IS NULL OR event_type = 'activity')")

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
    #: Points taken back because orders were refunded (REVERSE entries), migration 0009.
    Column("reversed", BigInteger, nullable=False, server_default="0"),
    Column("revision", BigInteger, nullable=False, server_default="1"),
    _ts("created_at"),
    _ts("updated_at"),
    _ts("last_activity_at"),
    CheckConstraint("balance >= 0", name="balance_not_negative"),
    CheckConstraint("earned >= 0 AND redeemed >= 0 AND expired >= 0", name="totals_not_negative"),
    CheckConstraint("balance = earned + adjusted - redeemed - expired - reversed",
                    name="balance_adds_up"),
    CheckConstraint("reversed >= 0", name="reversed_not_negative"),
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
    #: Tier id -> P at that tier instead of `points` (0011).
    Column("tier_points", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("revision", BigInteger, nullable=False, server_default="1"),
    _ts("created_at"),
    _ts("updated_at"),
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
    # ADJUST, staff EARN, REDEEM and REFUND source
    Column("actor", Text, nullable=True),
    #: The activity an EARN was for: a staff earn's (no event, no rule; 0008), or an
    #: activity event's, which must be its rule's (0009).
    Column("activity", Text, nullable=True),
    #: The REDEEM entry a REFUND gives back; at most one REFUND per REDEEM.
    Column("refunds_entry_id", UUID(as_uuid=True), ForeignKey("ledger_entries.id"),
           nullable=True, unique=True),
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
    _ts("created_at"),
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
    Column("activity", Text, nullable=True),
    Column("tier_points", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
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
        " 'no_points', 'no_rule', 'duplicate_activity', 'reversed', 'refund_recorded',"
        " 'duplicate_refund', 'pending')",
        name="outcome_known",
    ),
    CheckConstraint("(outcome IN ('earned', 'reversed')) = (ledger_entry_id IS NOT NULL AND points > 0)",
                    name="earned_has_entry"),
    #: Orders that earned nothing, found by a refund (0009): only those rows pay for it.
    Index("ix_processed_events_no_points_order", "account_id", "order_id",
          postgresql_where=text("outcome = 'no_points' AND order_id IS NOT NULL")),
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
    _ts("created_at"),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency_code"),
    CheckConstraint("due >= 0 AND taken >= 0 AND shortfall >= 0 AND cancelled >= 0"
                    " AND due = taken + shortfall + cancelled", name="due_adds_up"),
    CheckConstraint("(taken > 0) = (reverse_entry_id IS NOT NULL)", name="taken_has_entry"),
    CheckConstraint("earn_entry_id IS NOT NULL OR due = cancelled", name="due_has_earn"),
)

#: First result of every staff request (adjust, create, earn, redeem, refund) by
#: request_id, returned again on repeats; one request_id has one result, whatever the task.
staff_requests = Table(
    "staff_requests",
    metadata,
    Column("request_id", Text, primary_key=True),
    Column("fingerprint", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("reason", Text, nullable=True),
    Column("ledger_entry_id", UUID(as_uuid=True), ForeignKey("ledger_entries.id"), nullable=True),
    Column("result", JSONB, nullable=False),
    _ts("created_at"),
    Column("task", Text, nullable=False),
    _id_len("request_id"),
    CheckConstraint("status IN ('applied', 'rejected', 'created', 'existing')",
                    name="status_known"),
    CheckConstraint("(status = 'applied') = (ledger_entry_id IS NOT NULL)", name="applied_has_entry"),
)

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
    _ts("created_at"),
    _ts("updated_at"),
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
    Column("id", UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")),
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
    _ts("created_at"),
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
    _id_len("request_id"),
    Index("ix_redemptions_account_id_created_at", "account_id", "created_at"),
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
    _ts("updated_at"),
    CheckConstraint("id = 1", name="one_row"),
    CheckConstraint("pending_days BETWEEN 0 AND 90", name="pending_days_range"),
    CheckConstraint(PROGRAM_EXPIRATION_CHECK, name="expiration_shape"),
    CheckConstraint("expiration_months BETWEEN 1 AND 60", name="expiration_months_range"),
    CheckConstraint("expiration_percentage BETWEEN 1 AND 100", name="expiration_percentage_range"),
    CheckConstraint("tiers_status IN ('ACTIVE', 'PAUSED', 'DISABLED')", name="tiers_status_known"),
    CheckConstraint("rolling_window_months BETWEEN 1 AND 36", name="rolling_window_range"),
    CheckConstraint("revision >= 1", name="revision_positive"),
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
    _ts("created_at"),
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
    _ts("created_at"),
    _ts("updated_at"),
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

#: `points.expiring_soon` sent (migration 0012): one row per lot, or per account and quiet
#: period, written with its event by `loyalty_warn_expiring` only; the key makes it once.
expiry_warnings = Table(
    "expiry_warnings",
    metadata,
    Column("key", Text, primary_key=True),
    Column("account_id", UUID(as_uuid=True), ForeignKey("accounts.id"), nullable=False),
    Column("expiration_date", DateTime(timezone=True), nullable=False),
    Column("expiring_points", BigInteger, nullable=False),
    _ts("created_at"),
    CheckConstraint("expiring_points > 0", name="expiring_points_positive"),
)

__all__ = [
    "account_tiers",
    "accounts",
    "contacts",
    "dead_letters",
    "earn_rules",
    "expiry_warnings",
    "ledger_entries",
    "ledger_totals",
    "message_crashes",
    "metadata",
    "order_refunds",
    "outbox_events",
    "point_lots",
    "processed_events",
    "program",
    "redemptions",
    "rewards",
    "staff_requests",
    "tiers",
    "webhook_deliveries",
    "webhook_subscriptions",
]
