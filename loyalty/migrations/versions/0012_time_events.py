"""Events of points in time: `account.tier_changed` from the tier table itself.

- `account_tiers` is written only by `loyalty_recalculate_tiers` (SECURITY DEFINER), with
  every entry that changes tier points and by the periodic job as the window slides.
  Statement triggers on it (INSERT and UPDATE, from their transition tables) write one
  `account.tier_changed` per account whose tier really changed, in the same transaction:
  a rollback leaves no event, a recalculation that changes only the points none.
- The event takes the account's current revision (that of the entry that moved the tier),
  so `(account_revision, position)` keeps the per-account order of 0010. Within that
  revision it comes just before the entry's `account.points_updated`: the tiers are
  recomputed by `ledger_entries_lots`, which fires before `ledger_entries_outbox`
  (PostgreSQL fires a table's triggers in name order).
- `previous_tier` / `tier` are tier names; null is the base level (no tier). A tier
  deleted with accounts in it (`ON DELETE SET NULL`) leaves `previous_tier` null.

And `points.expiring_soon`, N days before points expire:
- `loyalty_warn_expiring(as_of, days)` (SECURITY DEFINER), called by the
  `loyalty.program.expire_points` run, records one `expiry_warnings` row per lot (`lots`
  mode) or per account and quiet period (`inactivity` mode) that expires within `days`
  of `as_of`, and one event per row it recorded. The row's key (`lot:<id>`,
  `inactivity:<account>:<last activity, epoch>`) makes it at most once: a second run for
  the same moment records nothing and sends nothing.
- The application role reads `expiry_warnings` and cannot write it, so, as for every
  other event, no code path can forge a warning.
- The accounts warned are locked in id order (as every writer locks them) and the event
  takes the account's revision read under that lock, keeping the per-account order.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

SAFE = "SET search_path = pg_catalog, pg_temp"

TIER_CHANGED = f"""
    CREATE OR REPLACE FUNCTION public.loyalty_outbox_tier_changed() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER {SAFE} AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO public.outbox_events
                (type, account_id, contact_id, account_revision, data)
            SELECT 'account.tier_changed', a.id, a.contact_id, a.revision,
                   jsonb_build_object('previous_tier', NULL, 'tier', t.name)
            FROM new_rows n JOIN public.accounts a ON a.id = n.account_id
                 JOIN public.tiers t ON t.id = n.tier_id
            ORDER BY n.account_id;
        ELSE
            INSERT INTO public.outbox_events
                (type, account_id, contact_id, account_revision, data)
            SELECT 'account.tier_changed', a.id, a.contact_id, a.revision,
                   jsonb_build_object('previous_tier', p.name, 'tier', t.name)
            FROM new_rows n JOIN old_rows o ON o.account_id = n.account_id
                 JOIN public.accounts a ON a.id = n.account_id
                 LEFT JOIN public.tiers p ON p.id = o.tier_id
                 LEFT JOIN public.tiers t ON t.id = n.tier_id
            WHERE n.tier_id IS DISTINCT FROM o.tier_id
              AND (p.name IS NOT NULL OR t.name IS NOT NULL)
            ORDER BY n.account_id;
        END IF;
        RETURN NULL;
    END $$
"""


#: The lots that expire (0011: `available_at <= as_of - months`) after `as_of` and by
#: `as_of + days`; or the accounts whose quiet period ends then. Both in id order, locked.
WARN_EXPIRING = f"""
    CREATE OR REPLACE FUNCTION public.loyalty_warn_expiring(warn_at timestamptz,
                                                            within_days integer)
    RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER {SAFE} AS $$
    DECLARE
        p public.program%ROWTYPE;
        months interval;
        horizon timestamptz;
        warned bigint := 0;
    BEGIN
        IF within_days IS NULL OR within_days < 1 OR within_days > 365 THEN
            RAISE EXCEPTION 'expiring-soon days must be 1 to 365'
                USING ERRCODE = 'check_violation', CONSTRAINT = 'expiry_warnings_days_range';
        END IF;
        SELECT * INTO p FROM public.program WHERE id = 1;
        IF NOT FOUND OR p.expiration_mode NOT IN ('lots', 'inactivity') THEN
            RETURN 0;
        END IF;
        months := make_interval(months => p.expiration_months);
        horizon := warn_at + make_interval(days => within_days);
        IF p.expiration_mode = 'lots' THEN
            WITH due AS (
                SELECT l.id, l.account_id, l.remaining, l.available_at + months AS expires_at,
                       a.contact_id, a.revision
                FROM public.point_lots l JOIN public.accounts a ON a.id = l.account_id
                WHERE l.status = 'available' AND l.remaining > 0
                  AND l.available_at > warn_at - months AND l.available_at <= horizon - months
                  AND NOT EXISTS (SELECT 1 FROM public.expiry_warnings x
                                  WHERE x.key = 'lot:' || l.id)
                ORDER BY a.id, l.id
                FOR UPDATE OF a
            ), written AS (
                INSERT INTO public.expiry_warnings AS x
                    (key, account_id, expiration_date, expiring_points)
                SELECT 'lot:' || d.id, d.account_id, d.expires_at, d.remaining FROM due d
                ON CONFLICT (key) DO NOTHING
                RETURNING x.key, x.account_id, x.expiration_date, x.expiring_points
            )
            INSERT INTO public.outbox_events
                (type, account_id, contact_id, account_revision, data)
            SELECT 'points.expiring_soon', w.account_id, d.contact_id, d.revision,
                   jsonb_build_object('expiration_date', w.expiration_date,
                                      'expiring_points', w.expiring_points)
            FROM written w JOIN due d ON 'lot:' || d.id = w.key
            ORDER BY w.account_id, w.expiration_date, w.key;
        ELSE
            WITH due AS (
                SELECT a.id AS account_id, a.contact_id, a.revision,
                       a.last_activity_at + months AS expires_at,
                       a.balance * p.expiration_percentage / 100 AS points,
                       'inactivity:' || a.id || ':' || extract(epoch FROM a.last_activity_at)
                           AS key
                FROM public.accounts a
                WHERE a.balance * p.expiration_percentage / 100 > 0
                  AND a.last_activity_at > warn_at - months
                  AND a.last_activity_at <= horizon - months
                  AND NOT EXISTS (SELECT 1 FROM public.expiry_warnings x WHERE x.key =
                      'inactivity:' || a.id || ':' || extract(epoch FROM a.last_activity_at))
                ORDER BY a.id
                FOR UPDATE OF a
            ), written AS (
                INSERT INTO public.expiry_warnings AS x
                    (key, account_id, expiration_date, expiring_points)
                SELECT d.key, d.account_id, d.expires_at, d.points FROM due d
                ON CONFLICT (key) DO NOTHING
                RETURNING x.key, x.account_id, x.expiration_date, x.expiring_points
            )
            INSERT INTO public.outbox_events
                (type, account_id, contact_id, account_revision, data)
            SELECT 'points.expiring_soon', w.account_id, d.contact_id, d.revision,
                   jsonb_build_object('expiration_date', w.expiration_date,
                                      'expiring_points', w.expiring_points)
            FROM written w JOIN due d ON d.key = w.key
            ORDER BY w.account_id;
        END IF;
        GET DIAGNOSTICS warned = ROW_COUNT;
        RETURN warned;
    END $$
"""


def upgrade() -> None:
    op.create_table(
        "expiry_warnings",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("account_id", sa.UUID(), nullable=False),
        sa.Column("expiration_date", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expiring_points", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("expiring_points > 0",
                           name=op.f("ck_expiry_warnings_expiring_points_positive")),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name=op.f("fk_expiry_warnings_account_id_accounts")),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_expiry_warnings")),
    )
    op.execute(WARN_EXPIRING)
    op.execute(TIER_CHANGED)
    op.execute("""
        CREATE TRIGGER account_tiers_outbox_inserted AFTER INSERT ON account_tiers
            REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION public.loyalty_outbox_tier_changed()""")
    op.execute("""
        CREATE TRIGGER account_tiers_outbox_updated AFTER UPDATE ON account_tiers
            REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION public.loyalty_outbox_tier_changed()""")


def downgrade() -> None:
    op.execute("DROP TRIGGER account_tiers_outbox_updated ON account_tiers")
    op.execute("DROP TRIGGER account_tiers_outbox_inserted ON account_tiers")
    op.execute("DROP FUNCTION public.loyalty_outbox_tier_changed()")
    op.execute("DROP FUNCTION public.loyalty_warn_expiring(timestamptz, integer)")
    op.drop_table("expiry_warnings")
