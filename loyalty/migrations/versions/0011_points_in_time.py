"""Points in time: program settings and point lots.

- `program`: one row (`id = 1`), its bounds CHECKed as `loyalty.program` validates
  them, its revision moved by exactly one per change (`loyalty_revision_step`, as rules
  and rewards), so `loyalty program set --revision` cannot lose a concurrent change.
- `point_lots`: every credit (EARN, positive ADJUST, REFUND) is a lot; every debit
  (REDEEM, negative ADJUST, REVERSE, EXPIRE) uses lots up, oldest first (with one
  expiration period for all lots, the oldest is the soonest to expire). The statement
  trigger `ledger_entries_lots` does both for a whole INSERT at once, from its transition
  table, so no writer of entries knows about lots and a batch costs two statements.
  It is SECURITY DEFINER: the application role can read lots but write none.
- At COMMIT (`point_lots_match_balance`, deferred, for every account whose balance or
  lots changed) the remaining points of an account's available lots add up to its
  balance; CHECKs keep every lot's remaining within 0 and its amount.
- Existing balances become one opening lot each, available from the upgrade.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
import sqlalchemy.dialects.postgresql
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

#: As loyalty.tables.PROGRAM_EXPIRATION_CHECK at this revision (a migration keeps its own copy).
PROGRAM_EXPIRATION_CHECK = (
    "expiration_mode = 'off'"
    " OR (expiration_mode = 'inactivity' AND expiration_months BETWEEN 1 AND 12"
    " AND expiration_percentage IS NOT NULL)"
    " OR (expiration_mode = 'lots' AND expiration_months IS NOT NULL)")

#: A pending lot is an order's points waiting: no entry yet, and what its EARN will say.
PENDING_SHAPE = ("status <> 'pending' OR (entry_id IS NULL AND order_id IS NOT NULL"
                 " AND event_id IS NOT NULL AND rule_id IS NOT NULL AND rule_revision IS NOT NULL)")
OUTCOMES_BEFORE = ("('earned', 'duplicate_order', 'duplicate_order_changed', 'already_signed_up',"
                   " 'no_points', 'no_rule', 'duplicate_activity', 'reversed', 'refund_recorded',"
                   " 'duplicate_refund')")
OUTCOMES = ("('earned', 'duplicate_order', 'duplicate_order_changed', 'already_signed_up',"
            " 'no_points', 'no_rule', 'duplicate_activity', 'reversed', 'refund_recorded',"
            " 'duplicate_refund', 'pending')")
DUE_ADDS_UP_BEFORE = ("due >= 0 AND taken >= 0 AND shortfall >= 0"
                      " AND due = taken + shortfall")
DUE_ADDS_UP = ("due >= 0 AND taken >= 0 AND shortfall >= 0 AND cancelled >= 0"
               " AND due = taken + shortfall + cancelled")

SAFE = "SET search_path = pg_catalog, pg_temp"

RULE_REVISION = f"""
    CREATE OR REPLACE FUNCTION public.loyalty_record_rule_revision() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER {SAFE} AS $$
    BEGIN
        INSERT INTO public.earn_rule_revisions (rule_id, revision, trigger, kind, points,
            money_amount, currency, status, activity, tier_points)
        VALUES (NEW.id, NEW.revision, NEW.trigger, NEW.kind, NEW.points, NEW.money_amount,
                NEW.currency, NEW.status, NEW.activity, NEW.tier_points);
        RETURN NULL;
    END $$
"""
#: As 0009 left it.
RULE_REVISION_BEFORE = f"""
    CREATE OR REPLACE FUNCTION public.loyalty_record_rule_revision() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER {SAFE} AS $$
    BEGIN
        INSERT INTO public.earn_rule_revisions
            (rule_id, revision, trigger, kind, points, money_amount, currency, status, activity)
        VALUES (NEW.id, NEW.revision, NEW.trigger, NEW.kind, NEW.points, NEW.money_amount,
                NEW.currency, NEW.status, NEW.activity);
        RETURN NULL;
    END $$
"""

FUNCTIONS = [
    # Credits become lots; then each account's debits, summed, use up its lots oldest
    # first (a running total over the lots says how much each one gives).
    f"""
    CREATE OR REPLACE FUNCTION public.loyalty_ledger_lots() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER {SAFE} AS $$
    BEGIN
        -- An order's pending lot becomes available with its EARN (activate_points).
        UPDATE public.point_lots l SET status = 'available', entry_id = n.id
        FROM new_entries n
        WHERE n.type = 'EARN' AND n.order_id IS NOT NULL AND l.status = 'pending'
          AND l.account_id = n.account_id AND l.order_id = n.order_id;
        INSERT INTO public.point_lots (account_id, entry_id, amount, remaining, available_at)
        SELECT n.account_id, n.id, n.amount, n.amount, n.created_at
        FROM new_entries n WHERE n.amount > 0
          AND NOT EXISTS (SELECT 1 FROM public.point_lots l WHERE l.entry_id = n.id)
        ORDER BY n.seq;
        WITH debit AS (
            SELECT account_id, -sum(amount) AS points FROM new_entries
            WHERE amount < 0 GROUP BY account_id
        ), ranked AS (
            SELECT l.id, l.remaining, d.points,
                   sum(l.remaining) OVER (PARTITION BY l.account_id
                                          ORDER BY l.available_at, l.id) AS upto
            FROM public.point_lots l JOIN debit d ON d.account_id = l.account_id
            WHERE l.remaining > 0 AND l.status = 'available'
        )
        UPDATE public.point_lots l
        SET remaining = l.remaining - LEAST(r.remaining, r.points - (r.upto - r.remaining))
        FROM ranked r
        WHERE l.id = r.id AND r.upto - r.remaining < r.points;
        -- Tier points change with earns, positive adjustments and reversals: the tier is
        -- recomputed in this transaction, as of now, while tiers are ACTIVE.
        IF EXISTS (SELECT 1 FROM public.program p WHERE p.id = 1 AND p.tiers_status = 'ACTIVE')
        THEN
            PERFORM public.loyalty_recalculate_tiers(array_agg(DISTINCT n.account_id), now())
            FROM new_entries n
            WHERE n.type IN ('EARN', 'REVERSE') OR (n.type = 'ADJUST' AND n.amount > 0)
            HAVING count(*) > 0;
        END IF;
        RETURN NULL;
    END $$
    """,
    # Tier points over the rolling window ending at `as_of`, and the highest tier they
    # reach (the base level is no tier), for these accounts: one statement. Rows change only
    # when the tier or the points do, so a second run at the same moment writes nothing.
    f"""
    CREATE OR REPLACE FUNCTION public.loyalty_recalculate_tiers(accounts uuid[],
                                                                as_of timestamptz)
    RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER {SAFE} AS $$
    DECLARE
        changed bigint;
    BEGIN
        WITH window_start AS (
            SELECT as_of - make_interval(months => p.rolling_window_months) AS since
            FROM public.program p WHERE p.id = 1
        ), points AS (
            SELECT k.id AS account_id, COALESCE((
                SELECT sum(CASE WHEN e.type = 'REVERSE' THEN
                           CASE WHEN o.created_at > w.since THEN e.amount ELSE 0 END
                           ELSE e.amount END)
                FROM public.ledger_entries e
                LEFT JOIN public.ledger_entries o ON o.id = e.reverses_entry_id
                WHERE e.account_id = k.id AND e.created_at > w.since AND e.created_at <= as_of
                  AND (e.type IN ('EARN', 'REVERSE') OR (e.type = 'ADJUST' AND e.amount > 0))
            ), 0) AS points
            FROM unnest(accounts) AS k(id) CROSS JOIN window_start w
        ), decided AS (
            SELECT p.account_id, GREATEST(p.points, 0) AS points,
                   (SELECT t.id FROM public.tiers t WHERE t.required_points <= p.points
                    ORDER BY t.required_points DESC LIMIT 1) AS tier_id
            FROM points p
        )
        INSERT INTO public.account_tiers AS a (account_id, tier_id, points, updated_at)
        SELECT d.account_id, d.tier_id, d.points, now() FROM decided d
        WHERE d.points > 0 OR d.tier_id IS NOT NULL
           OR EXISTS (SELECT 1 FROM public.account_tiers x WHERE x.account_id = d.account_id)
        ORDER BY d.account_id
        ON CONFLICT (account_id) DO UPDATE
            SET tier_id = EXCLUDED.tier_id, points = EXCLUDED.points, updated_at = now()
            WHERE (a.tier_id, a.points) IS DISTINCT FROM (EXCLUDED.tier_id, EXCLUDED.points);
        GET DIAGNOSTICS changed = ROW_COUNT;
        RETURN changed;
    END $$
    """,
    # At most 20 tiers.
    f"""
    CREATE OR REPLACE FUNCTION public.loyalty_tiers_at_most_20() RETURNS trigger
    LANGUAGE plpgsql {SAFE} AS $$
    BEGIN
        IF (SELECT count(*) FROM public.tiers) > 20 THEN
            RAISE EXCEPTION 'a program has at most 20 tiers'
                USING ERRCODE = 'check_violation', CONSTRAINT = 'tiers_at_most_20';
        END IF;
        RETURN NULL;
    END $$
    """,
    # Deferred, per account whose balance or lots changed: at COMMIT its available lots
    # hold exactly its balance.
    f"""
    CREATE OR REPLACE FUNCTION public.loyalty_lots_match_balance() RETURNS trigger
    LANGUAGE plpgsql {SAFE} AS $$
    DECLARE
        account uuid;
        balance bigint;
        held bigint;
    BEGIN
        IF TG_OP = 'DELETE' THEN
            account := (to_jsonb(OLD) ->> TG_ARGV[0])::uuid;
        ELSE
            account := (to_jsonb(NEW) ->> TG_ARGV[0])::uuid;
        END IF;
        SELECT a.balance INTO balance FROM public.accounts a WHERE a.id = account;
        -- `remaining > 0`: what is used up adds nothing, and the partial index has the rest.
        SELECT COALESCE(sum(l.remaining), 0) INTO held FROM public.point_lots l
        WHERE l.account_id = account AND l.remaining > 0 AND l.status = 'available';
        IF balance IS DISTINCT FROM held THEN
            RAISE EXCEPTION 'account % has a balance of % but its available lots hold %',
                account, balance, held
                USING ERRCODE = 'check_violation', CONSTRAINT = 'point_lots_match_balance';
        END IF;
        RETURN NULL;
    END $$
    """,
]


def upgrade() -> None:
    op.create_table(
        "program",
        sa.Column("id", sa.Integer(), server_default="1", nullable=False),
        sa.Column("pending_days", sa.Integer(), server_default="0", nullable=False),
        sa.Column("expiration_mode", sa.Text(), server_default="off", nullable=False),
        sa.Column("expiration_months", sa.Integer(), nullable=True),
        sa.Column("expiration_percentage", sa.Integer(), nullable=True),
        sa.Column("tiers_status", sa.Text(), server_default="DISABLED", nullable=False),
        sa.Column("rolling_window_months", sa.Integer(), server_default="12", nullable=False),
        sa.Column("revision", sa.BigInteger(), server_default="1", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_program_one_row")),
        sa.CheckConstraint("pending_days BETWEEN 0 AND 90",
                           name=op.f("ck_program_pending_days_range")),
        sa.CheckConstraint(PROGRAM_EXPIRATION_CHECK, name=op.f("ck_program_expiration_shape")),
        sa.CheckConstraint("expiration_months BETWEEN 1 AND 60",
                           name=op.f("ck_program_expiration_months_range")),
        sa.CheckConstraint("expiration_percentage BETWEEN 1 AND 100",
                           name=op.f("ck_program_expiration_percentage_range")),
        sa.CheckConstraint("tiers_status IN ('ACTIVE', 'PAUSED', 'DISABLED')",
                           name=op.f("ck_program_tiers_status_known")),
        sa.CheckConstraint("rolling_window_months BETWEEN 1 AND 36",
                           name=op.f("ck_program_rolling_window_range")),
        sa.CheckConstraint("revision >= 1", name=op.f("ck_program_revision_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_program")),
    )
    op.execute("INSERT INTO program (id) VALUES (1)")
    op.execute("""
        CREATE TRIGGER program_revision_step BEFORE UPDATE ON program
            FOR EACH ROW EXECUTE FUNCTION public.loyalty_revision_step()""")

    op.create_table(
        "point_lots",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("account_id", sa.UUID(), nullable=False),
        sa.Column("entry_id", sa.UUID(), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Text(), server_default="available", nullable=False),
        sa.Column("available_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("order_id", sa.Text(), nullable=True),
        sa.Column("event_id", sa.Text(), nullable=True),
        sa.Column("rule_id", sa.BigInteger(), nullable=True),
        sa.Column("rule_revision", sa.BigInteger(), nullable=True),
        sa.Column("order_total", sa.Numeric(18, 4), nullable=True),
        sa.Column("currency", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_point_lots_amount_positive")),
        sa.CheckConstraint("remaining BETWEEN 0 AND amount",
                           name=op.f("ck_point_lots_remaining_range")),
        sa.CheckConstraint("status IN ('pending', 'available')",
                           name=op.f("ck_point_lots_status_known")),
        sa.CheckConstraint(PENDING_SHAPE, name=op.f("ck_point_lots_pending_shape")),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name=op.f("fk_point_lots_account_id_accounts")),
        sa.ForeignKeyConstraint(["entry_id"], ["ledger_entries.id"],
                                name=op.f("fk_point_lots_entry_id_ledger_entries")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_point_lots")),
        sa.UniqueConstraint("entry_id", name=op.f("uq_point_lots_entry_id")),
    )
    op.create_index("ix_point_lots_open", "point_lots", ["account_id", "available_at", "id"],
                    postgresql_where=sa.text("remaining > 0"))
    op.create_index("uq_point_lots_one_order", "point_lots", ["account_id", "order_id"],
                    unique=True, postgresql_where=sa.text("order_id IS NOT NULL"))
    op.create_index("ix_point_lots_pending_until", "point_lots", ["available_at"],
                    postgresql_where=sa.text("remaining > 0 AND status = 'pending'"))
    op.create_index("ix_point_lots_open_since", "point_lots", ["available_at"],
                    postgresql_where=sa.text("remaining > 0 AND status = 'available'"))
    op.execute("INSERT INTO point_lots (account_id, amount, remaining, available_at)"
               " SELECT id, balance, balance, now() FROM accounts WHERE balance > 0 ORDER BY id")
    _replace_check("processed_events", "outcome_known", f"outcome IN {OUTCOMES}")
    # A refund while an order's points are pending cancels them: no entry, `cancelled`.
    op.add_column("order_refunds", sa.Column("cancelled", sa.BigInteger(), server_default="0",
                                             nullable=False))
    _replace_check("order_refunds", "due_adds_up", DUE_ADDS_UP)
    _replace_check("order_refunds", "due_has_earn", "earn_entry_id IS NOT NULL OR due = cancelled")
    op.create_table(
        "tiers",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("required_points", sa.BigInteger(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("revision", sa.BigInteger(), server_default="1", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("char_length(name) BETWEEN 1 AND 50", name=op.f("ck_tiers_name_length")),
        sa.CheckConstraint("required_points BETWEEN 1 AND 9999999",
                           name=op.f("ck_tiers_required_points_range")),
        sa.CheckConstraint("char_length(description) <= 500",
                           name=op.f("ck_tiers_description_length")),
        sa.CheckConstraint("revision >= 1", name=op.f("ck_tiers_revision_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tiers")),
        sa.UniqueConstraint("name", name=op.f("uq_tiers_name")),
        sa.UniqueConstraint("required_points", name=op.f("uq_tiers_required_points")),
    )
    op.create_table(
        "account_tiers",
        sa.Column("account_id", sa.UUID(), nullable=False),
        sa.Column("tier_id", sa.BigInteger(), nullable=True),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("points >= 0", name=op.f("ck_account_tiers_points_not_negative")),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name=op.f("fk_account_tiers_account_id_accounts")),
        sa.ForeignKeyConstraint(["tier_id"], ["tiers.id"], ondelete="SET NULL",
                                name=op.f("fk_account_tiers_tier_id_tiers")),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_account_tiers")),
    )
    # An earn rule may give other points (fixed) or rates (P of "P per M") per tier; its
    # history keeps them, and an EARN (or a pending lot) names the tier it was computed at.
    for table in ("earn_rules", "earn_rule_revisions"):
        op.add_column(table, sa.Column("tier_points", sa.dialects.postgresql.JSONB(),
                                       server_default=sa.text("'{}'::jsonb"), nullable=False))
    op.execute("ALTER TABLE earn_rules ADD CONSTRAINT ck_earn_rules_tier_points_object"
               " CHECK (jsonb_typeof(tier_points) = 'object')")
    op.add_column("ledger_entries", sa.Column("tier_id", sa.BigInteger(), nullable=True))
    op.add_column("point_lots", sa.Column("tier_id", sa.BigInteger(), nullable=True))
    op.execute(RULE_REVISION)
    # A reward may cost other points per tier: {"<tier id>": points}.
    op.add_column("rewards", sa.Column("tier_costs", sa.dialects.postgresql.JSONB(),
                                       server_default=sa.text("'{}'::jsonb"), nullable=False))
    op.execute("ALTER TABLE rewards ADD CONSTRAINT ck_rewards_tier_costs_object"
               " CHECK (jsonb_typeof(tier_costs) = 'object')")
    for statement in FUNCTIONS:
        op.execute(statement)
    op.execute("""
        CREATE TRIGGER tiers_revision_step BEFORE UPDATE ON tiers
            FOR EACH ROW EXECUTE FUNCTION public.loyalty_revision_step()""")
    op.execute("""
        CREATE TRIGGER tiers_at_most_20 AFTER INSERT ON tiers
            FOR EACH STATEMENT EXECUTE FUNCTION public.loyalty_tiers_at_most_20()""")
    # After `ledger_entries_checked` (0007), which locks the accounts, in name order.
    op.execute("""
        CREATE TRIGGER ledger_entries_lots AFTER INSERT ON ledger_entries
            REFERENCING NEW TABLE AS new_entries
            FOR EACH STATEMENT EXECUTE FUNCTION public.loyalty_ledger_lots()""")
    op.execute("""
        CREATE CONSTRAINT TRIGGER point_lots_match_balance
            AFTER INSERT OR UPDATE OR DELETE ON point_lots DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW EXECUTE FUNCTION public.loyalty_lots_match_balance('account_id')""")
    op.execute("""
        CREATE CONSTRAINT TRIGGER accounts_balance_matches_lots
            AFTER UPDATE OF balance ON accounts DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW WHEN (OLD.balance IS DISTINCT FROM NEW.balance)
            EXECUTE FUNCTION public.loyalty_lots_match_balance('id')""")


def _replace_check(table: str, name: str, check: str) -> None:
    op.execute(f"ALTER TABLE {table} DROP CONSTRAINT ck_{table}_{name}")
    op.execute(f"ALTER TABLE {table} ADD CONSTRAINT ck_{table}_{name} CHECK ({check})")


def downgrade() -> None:
    _replace_check("order_refunds", "due_has_earn", "earn_entry_id IS NOT NULL OR due = 0")
    _replace_check("order_refunds", "due_adds_up", DUE_ADDS_UP_BEFORE)
    op.drop_column("order_refunds", "cancelled")
    _replace_check("processed_events", "outcome_known", f"outcome IN {OUTCOMES_BEFORE}")
    op.execute("DROP TRIGGER accounts_balance_matches_lots ON accounts")
    op.execute("DROP TRIGGER ledger_entries_lots ON ledger_entries")
    op.drop_table("point_lots")
    op.execute("DROP FUNCTION public.loyalty_lots_match_balance()")
    op.execute("DROP FUNCTION public.loyalty_ledger_lots()")
    op.drop_column("rewards", "tier_costs")
    op.execute(RULE_REVISION_BEFORE)
    op.drop_column("ledger_entries", "tier_id")
    op.drop_constraint("ck_earn_rules_tier_points_object", "earn_rules")
    for table in ("earn_rules", "earn_rule_revisions"):
        op.drop_column(table, "tier_points")
    op.drop_table("account_tiers")
    op.drop_table("tiers")
    op.execute("DROP FUNCTION public.loyalty_recalculate_tiers(uuid[], timestamptz)")
    op.execute("DROP FUNCTION public.loyalty_tiers_at_most_20()")
    op.drop_table("program")
