"""Outgoing events: a transactional outbox written by triggers, webhook subscriptions and
their deliveries.

- `outbox_events` is written only by the triggers below, in the transaction of the change
  itself: an event exists if and only if its change committed. Statement-level triggers
  with transition tables write one `INSERT .. SELECT` per statement, so a batch of 500
  entries costs one statement, not 500.
- Every ledger entry type is covered (EARN, ADJUST and the REDEEM, REFUND, REVERSE and
  EXPIRE entries other migrations add) without their writers knowing about events.
- The trigger functions are SECURITY DEFINER (owned by the schema owner, hardened like
  0007): the application role may mark events delivered and prune delivered ones, but it
  cannot INSERT an event of its own, so no code path can forge an
  `account.points_updated` that the ledger never wrote.
- An event's place among its account's events is `(account_revision, position)`: the
  account row lock serialises an account's writers, so revisions follow commit order;
  `position` (an identity) orders the events of one change.
- Deleting an undelivered event is refused (`outbox_events_prune_delivered_only`).

Redemptions (`redemption.created`, `redemption.refunded`) come from a `redemptions` table
that another migration adds: `REDEMPTION_TRIGGER` below is applied by that migration (or
the merge) once the table exists; see its docstring.

Revision ID: 0010
Revises: 0007
"""

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

SAFE = "SET search_path = pg_catalog, pg_temp"

EVENT_TYPES = ("account.created", "account.points_updated", "account.tier_changed",
               "points.expiring_soon", "redemption.created", "redemption.refunded")
_TYPES_SQL = ", ".join(f"'{t}'" for t in EVENT_TYPES)

FUNCTIONS = [
    # One event per new ledger entry, in seq order, with the entry as it was written.
    f"""
    CREATE OR REPLACE FUNCTION public.loyalty_outbox_points_updated() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER {SAFE} AS $$
    BEGIN
        INSERT INTO public.outbox_events
            (type, account_id, contact_id, account_revision, occurred_at, data)
        SELECT 'account.points_updated', n.account_id, a.contact_id, n.account_revision,
               n.created_at,
               jsonb_build_object(
                   'transaction_id', n.id, 'type', n.type, 'amount', n.amount,
                   'balance_after', n.balance_after, 'revision', n.account_revision,
                   'description', n.description, 'event_id', n.event_id,
                   'order_id', n.order_id)
        FROM new_entries n JOIN public.accounts a ON a.id = n.account_id
        ORDER BY n.seq;
        RETURN NULL;
    END $$
    """,
    f"""
    CREATE OR REPLACE FUNCTION public.loyalty_outbox_account_created() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER {SAFE} AS $$
    BEGIN
        INSERT INTO public.outbox_events
            (type, account_id, contact_id, account_revision, occurred_at, data)
        SELECT 'account.created', n.id, n.contact_id, n.revision, n.created_at,
               jsonb_build_object('balance', n.balance, 'revision', n.revision)
        FROM new_accounts n
        ORDER BY n.id;
        RETURN NULL;
    END $$
    """,
    # Pruning is set-based; an undelivered event must never be deleted, by anyone.
    f"""
    CREATE OR REPLACE FUNCTION public.loyalty_outbox_prune_delivered_only() RETURNS trigger
    LANGUAGE plpgsql {SAFE} AS $$
    DECLARE
        bad uuid;
    BEGIN
        SELECT o.id INTO bad FROM old_events o WHERE o.delivered_at IS NULL LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'outbox event % was not delivered and cannot be deleted', bad
                USING ERRCODE = 'integrity_constraint_violation',
                      CONSTRAINT = 'outbox_events_prune_delivered_only';
        END IF;
        RETURN NULL;
    END $$
    """,
]

#: For the merge with the redemptions migration (issue 10), NOT applied here: the table
#: does not exist on this branch. Run it (`op.execute(REDEMPTION_TRIGGER)`) in the first
#: migration after both, or it applies itself when this migration runs after the one that
#: creates `redemptions` (the `to_regclass` guard below). It assumes `redemptions` has
#: `id`, `account_id` and `status` columns, `status = 'REFUNDED'` once refunded, and the
#: account's revision after the change in `accounts.revision` (the REDEEM/REFUND entry
#: was written first in the same transaction); adjust the column names if they differ.
#: The event's data is the redemption row itself (`to_jsonb`).
REDEMPTION_TRIGGER = f"""
    CREATE OR REPLACE FUNCTION public.loyalty_outbox_redemptions() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER {SAFE} AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO public.outbox_events
                (type, account_id, contact_id, account_revision, data)
            SELECT 'redemption.created', a.id, a.contact_id, a.revision, to_jsonb(r)
            FROM new_rows r JOIN public.accounts a ON a.id = r.account_id
            ORDER BY r.id;
        ELSE
            INSERT INTO public.outbox_events
                (type, account_id, contact_id, account_revision, data)
            SELECT 'redemption.refunded', a.id, a.contact_id, a.revision, to_jsonb(r)
            FROM new_rows r JOIN old_rows o ON o.id = r.id
                 JOIN public.accounts a ON a.id = r.account_id
            WHERE r.status = 'REFUNDED' AND o.status IS DISTINCT FROM 'REFUNDED'
            ORDER BY r.id;
        END IF;
        RETURN NULL;
    END $$;
    DROP TRIGGER IF EXISTS redemptions_outbox_created ON public.redemptions;
    DROP TRIGGER IF EXISTS redemptions_outbox_refunded ON public.redemptions;
    CREATE TRIGGER redemptions_outbox_created AFTER INSERT ON public.redemptions
        REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION public.loyalty_outbox_redemptions();
    CREATE TRIGGER redemptions_outbox_refunded AFTER UPDATE ON public.redemptions
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION public.loyalty_outbox_redemptions();
"""


def _timestamp(name: str, nullable: bool = False) -> sa.Column[Any]:
    if nullable:
        return sa.Column(name, sa.DateTime(timezone=True), nullable=True)
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.text("now()"),
                     nullable=False)


def upgrade() -> None:
    op.create_table(
        "outbox_events",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("position", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("account_id", sa.UUID(), nullable=False),
        sa.Column("contact_id", sa.Text(), nullable=False),
        sa.Column("account_revision", sa.BigInteger(), nullable=False),
        _timestamp("occurred_at"),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        _timestamp("delivered_at", nullable=True),
        sa.CheckConstraint(f"type IN ({_TYPES_SQL})", name=op.f("ck_outbox_events_type_known")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_events")),
        sa.UniqueConstraint("position", name=op.f("uq_outbox_events_position")),
    )
    op.create_index("ix_outbox_events_pending", "outbox_events",
                    ["account_id", "account_revision", "position"],
                    postgresql_where=sa.text("delivered_at IS NULL"))
    op.create_index("ix_outbox_events_pending_position", "outbox_events", ["position"],
                    postgresql_where=sa.text("delivered_at IS NULL"))
    op.create_index("ix_outbox_events_delivered_at", "outbox_events", ["delivered_at"],
                    postgresql_where=sa.text("delivered_at IS NOT NULL"))

    op.create_table(
        "webhook_subscriptions",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("event_types", postgresql.ARRAY(sa.Text()), nullable=True),
        sa.Column("secret", sa.Text(), nullable=False),
        _timestamp("created_at"),
        _timestamp("removed_at", nullable=True),
        sa.CheckConstraint("char_length(url) BETWEEN 8 AND 2048 AND url ~ '^https?://'",
                           name=op.f("ck_webhook_subscriptions_url_shape")),
        sa.CheckConstraint(f"event_types IS NULL OR (cardinality(event_types) >= 1"
                           f" AND event_types <@ ARRAY[{_TYPES_SQL}]::text[])",
                           name=op.f("ck_webhook_subscriptions_event_types_known")),
        sa.CheckConstraint("secret ~ '^whsec_[A-Za-z0-9+/=]{16,}$'",
                           name=op.f("ck_webhook_subscriptions_secret_shape")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_subscriptions")),
    )

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("subscription_id", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("account_id", sa.UUID(), nullable=False),
        sa.Column("account_revision", sa.BigInteger(), nullable=False),
        sa.Column("event_position", sa.BigInteger(), nullable=False),
        #: The exact body signed and sent, so a retry or a redelivery after the event was
        #: pruned from the outbox sends the very same bytes.
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        _timestamp("next_attempt_at"),
        #: Retries stop this long after it (LOYALTY_WEBHOOK_RETRY_FOR); a redelivery
        #: starts a new window.
        _timestamp("retry_from"),
        _timestamp("created_at"),
        _timestamp("last_attempt_at", nullable=True),
        _timestamp("delivered_at", nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.CheckConstraint("status IN ('pending', 'delivered', 'failed')",
                           name=op.f("ck_webhook_deliveries_status_known")),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_webhook_deliveries_attempts_positive")),
        sa.CheckConstraint("(status = 'delivered') = (delivered_at IS NOT NULL)",
                           name=op.f("ck_webhook_deliveries_delivered_has_time")),
        sa.ForeignKeyConstraint(["subscription_id"], ["webhook_subscriptions.id"],
                                name=op.f("fk_webhook_deliveries_subscription_id_webhook_subscriptions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint("subscription_id", "event_id",
                            name=op.f("uq_webhook_deliveries_subscription_id_event_id")),
    )
    op.create_index("ix_webhook_deliveries_pending", "webhook_deliveries",
                    ["subscription_id", "account_id", "account_revision", "event_position"],
                    postgresql_where=sa.text("status = 'pending'"))
    op.create_index("ix_webhook_deliveries_status_id", "webhook_deliveries", ["status", "id"])

    for statement in FUNCTIONS:
        op.execute(statement)
    op.execute("""
        CREATE TRIGGER ledger_entries_outbox AFTER INSERT ON ledger_entries
            REFERENCING NEW TABLE AS new_entries
            FOR EACH STATEMENT EXECUTE FUNCTION public.loyalty_outbox_points_updated()""")
    op.execute("""
        CREATE TRIGGER accounts_outbox AFTER INSERT ON accounts
            REFERENCING NEW TABLE AS new_accounts
            FOR EACH STATEMENT EXECUTE FUNCTION public.loyalty_outbox_account_created()""")
    op.execute("""
        CREATE TRIGGER outbox_events_prune_delivered_only AFTER DELETE ON outbox_events
            REFERENCING OLD TABLE AS old_events
            FOR EACH STATEMENT EXECUTE FUNCTION public.loyalty_outbox_prune_delivered_only()""")
    if op.get_bind().execute(sa.text(
            "SELECT to_regclass('public.redemptions') IS NOT NULL")).scalar_one():
        op.execute(REDEMPTION_TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS redemptions_outbox_created ON public.redemptions"
               if _has_redemptions() else "SELECT 1")
    op.execute("DROP TRIGGER IF EXISTS redemptions_outbox_refunded ON public.redemptions"
               if _has_redemptions() else "SELECT 1")
    op.execute("DROP FUNCTION IF EXISTS public.loyalty_outbox_redemptions()")
    op.execute("DROP TRIGGER accounts_outbox ON accounts")
    op.execute("DROP TRIGGER ledger_entries_outbox ON ledger_entries")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_subscriptions")
    op.drop_table("outbox_events")
    for name in ("loyalty_outbox_points_updated", "loyalty_outbox_account_created",
                 "loyalty_outbox_prune_delivered_only"):
        op.execute(f"DROP FUNCTION public.{name}()")


def _has_redemptions() -> bool:
    return bool(op.get_bind().execute(sa.text(
        "SELECT to_regclass('public.redemptions') IS NOT NULL")).scalar_one())
