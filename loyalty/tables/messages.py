"""What became of each message the worker took: accepted events, staff requests'
first results, dead letters and the messages that crashed a worker process."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from loyalty.tables.base import id_length, metadata, timestamp

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
    timestamp("processed_at"),
    #: The event as accepted (normalised), for `loyalty events list`; NULL before 0006.
    Column("payload", JSONB, nullable=True),
    #: What an outcome needs said: both totals of a `duplicate_order_changed`.
    Column("detail", JSONB, nullable=True),
    id_length("event_id"),
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
    timestamp("created_at"),
    Column("task", Text, nullable=False),
    id_length("request_id"),
    CheckConstraint("status IN ('applied', 'rejected', 'created', 'existing')",
                    name="status_known"),
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
    timestamp("first_failed_at"),
    timestamp("last_failed_at"),
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
    timestamp("first_crashed_at"),
    timestamp("last_crashed_at"),
    CheckConstraint("crashes >= 1", name="crashes_positive"),
)
