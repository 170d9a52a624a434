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

Revision ID: 0012
Revises: 0011
"""

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


def upgrade() -> None:
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
