"""Issue 10, events side: refunds take points back (REVERSE), and activities earn.

- `accounts.reversed`: points taken back because orders were refunded; the identity
  becomes `balance = earned + adjusted - redeemed - expired - reversed`.
- Entry type `REVERSE` (negative): it names its refund and the EARN of its order it takes
  back from (`reverses_entry_id`), on the same account and order, and an order's reversals
  never add up to more than it earned. `order_refunds` keeps every refund once per
  (account, order, refund_id), with what it was due, took and could not take (shortfall).
- Earn rule trigger `activity` with an activity name (fixed, no currency), one ACTIVE rule
  per activity; an activity EARN names its activity (its rule's, by a composite foreign
  key) and, with a reference, earns once per account, activity and reference.
- `event_type` and the processed outcomes take the new events.

The trigger function `loyalty_reversal_checks` owns the REVERSE invariants, including
`accounts.reversed` = the sum of the account's REVERSE entries; `loyalty_reversed_matches_ledger`
rechecks that sum at COMMIT for any change of `accounts.reversed`. Both are schema-qualified
and run with a fixed search_path, like 0007's.

Revision ID: 0009
Revises: 0007 (to be re-pointed at 0008 when both land; nothing here depends on 0008)
"""

import importlib.util
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import op

#: An activity event's EARN names its activity (its rule's, by foreign key); otherwise only
#: a staff EARN (no event) carries an activity (0008); a reference only on an activity's.
ACTIVITY_EARN_CHECK = ("(event_type IS DISTINCT FROM 'activity' OR activity IS NOT NULL)"
                       " AND (activity IS NULL OR (type = 'EARN'"
                       " AND (event_type = 'activity' OR event_type IS NULL)))"
                       " AND (reference_id IS NULL OR event_type = 'activity')")

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

SAFE = "SET search_path = pg_catalog, pg_temp"

OUTCOMES_BEFORE = ("('earned', 'duplicate_order', 'duplicate_order_changed', 'already_signed_up',"
                   " 'no_points', 'no_rule')")
OUTCOMES = ("('earned', 'duplicate_order', 'duplicate_order_changed', 'already_signed_up',"
            " 'no_points', 'no_rule', 'duplicate_activity', 'reversed', 'refund_recorded',"
            " 'duplicate_refund')")
EVENT_TYPES_BEFORE = "('signup', 'order.completed')"
EVENT_TYPES = "('signup', 'order.completed', 'activity', 'order.refunded')"
TYPES_BEFORE = "('EARN', 'ADJUST', 'REDEEM', 'REFUND', 'EXPIRE')"
TYPES = "('EARN', 'ADJUST', 'REDEEM', 'REFUND', 'EXPIRE', 'REVERSE')"

FUNCTIONS = [
    # Statement-level, after every INSERT into ledger_entries: only new REVERSE rows and
    # their accounts are looked at, so an insert without one reads nothing.
    f"""
    CREATE OR REPLACE FUNCTION public.loyalty_reversal_checks() RETURNS trigger
    LANGUAGE plpgsql {SAFE} AS $$
    DECLARE
        bad record;
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM new_entries WHERE type = 'REVERSE') THEN
            RETURN NULL;
        END IF;
        SELECT n.id, n.account_id, n.order_id, n.reverses_entry_id INTO bad
            FROM new_entries n
            LEFT JOIN public.ledger_entries e ON e.id = n.reverses_entry_id
            WHERE n.type = 'REVERSE'
              AND (e.id IS NULL OR e.type <> 'EARN' OR e.account_id <> n.account_id
                   OR e.order_id IS DISTINCT FROM n.order_id)
            LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'REVERSE entry % does not reverse the EARN of order % on account %',
                bad.id, bad.order_id, bad.account_id
                USING ERRCODE = 'check_violation',
                      CONSTRAINT = 'ledger_entries_reverses_order_earn';
        END IF;
        -- Per (account, order) and per account, one index probe each (the partial
        -- index of REVERSE entries): never a scan of every reversal there is.
        SELECT p.account_id, p.order_id, t.taken, e.amount AS earned INTO bad
            FROM (SELECT DISTINCT account_id, order_id FROM new_entries
                  WHERE type = 'REVERSE') p
            CROSS JOIN LATERAL (SELECT -sum(r.amount) AS taken FROM public.ledger_entries r
                                WHERE r.type = 'REVERSE' AND r.account_id = p.account_id
                                  AND r.order_id = p.order_id) t
            JOIN public.ledger_entries e ON e.account_id = p.account_id
                 AND e.order_id = p.order_id AND e.type = 'EARN' AND e.order_id IS NOT NULL
            WHERE t.taken > e.amount
            LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'order % of account % earned % points; its reversals take back %',
                bad.order_id, bad.account_id, bad.earned, bad.taken
                USING ERRCODE = 'check_violation',
                      CONSTRAINT = 'ledger_entries_reversals_within_earned';
        END IF;
        SELECT a.id, a.reversed, t.total AS ledger_reversed INTO bad
            FROM (SELECT DISTINCT account_id FROM new_entries WHERE type = 'REVERSE') n
            JOIN public.accounts a ON a.id = n.account_id
            CROSS JOIN LATERAL (SELECT COALESCE(-sum(r.amount), 0) AS total
                                FROM public.ledger_entries r
                                WHERE r.type = 'REVERSE' AND r.account_id = a.id) t
            WHERE a.reversed <> t.total
            LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'account % reversed % does not match its REVERSE entries (%)',
                bad.id, bad.reversed, bad.ledger_reversed
                USING ERRCODE = 'check_violation',
                      CONSTRAINT = 'accounts_reversed_matches_ledger';
        END IF;
        RETURN NULL;
    END $$
    """,
    # Deferred, per account whose `reversed` changed: at COMMIT it must be the sum of the
    # account's REVERSE entries, whether or not an entry came with the change.
    f"""
    CREATE OR REPLACE FUNCTION public.loyalty_reversed_matches_ledger() RETURNS trigger
    LANGUAGE plpgsql {SAFE} AS $$
    DECLARE
        cached bigint;
        total bigint;
    BEGIN
        SELECT reversed INTO cached FROM public.accounts WHERE id = NEW.id;
        SELECT COALESCE(-sum(amount), 0) INTO total FROM public.ledger_entries
            WHERE account_id = NEW.id AND type = 'REVERSE';
        IF cached IS DISTINCT FROM total THEN
            RAISE EXCEPTION 'account % reversed % does not match its REVERSE entries (%)',
                NEW.id, cached, total
                USING ERRCODE = 'check_violation',
                      CONSTRAINT = 'accounts_reversed_matches_ledger';
        END IF;
        RETURN NULL;
    END $$
    """,
    # The rule history records the activity too, so an activity EARN can be checked
    # against the terms it was computed by.
    f"""
    CREATE OR REPLACE FUNCTION public.loyalty_record_rule_revision() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER {SAFE} AS $$
    BEGIN
        INSERT INTO public.earn_rule_revisions
            (rule_id, revision, trigger, kind, points, money_amount, currency, status, activity)
        VALUES (NEW.id, NEW.revision, NEW.trigger, NEW.kind, NEW.points, NEW.money_amount,
                NEW.currency, NEW.status, NEW.activity);
        RETURN NULL;
    END $$
    """,
]

RULE_REVISION_BEFORE = f"""
    CREATE OR REPLACE FUNCTION public.loyalty_record_rule_revision() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER {SAFE} AS $$
    BEGIN
        INSERT INTO public.earn_rule_revisions
            (rule_id, revision, trigger, kind, points, money_amount, currency, status)
        VALUES (NEW.id, NEW.revision, NEW.trigger, NEW.kind, NEW.points, NEW.money_amount,
                NEW.currency, NEW.status);
        RETURN NULL;
    END $$
"""


def _redemptions() -> Any:
    """Migration 0008, whose per-type totals this one extends with `reversed`."""
    path = Path(__file__).with_name("0008_redemptions.py")
    spec = importlib.util.spec_from_file_location("loyalty_migration_0008", path)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


#: REVERSE entries count towards `reversed`, kept and checked with the other totals.
REVERSED_TOTAL = {"reversed": "-sum(amount) FILTER (WHERE type = 'REVERSE')"}


def _replace_check(table: str, name: str, condition: str) -> None:
    op.execute(f"ALTER TABLE {table} DROP CONSTRAINT ck_{table}_{name}")
    op.execute(f"ALTER TABLE {table} ADD CONSTRAINT ck_{table}_{name} CHECK ({condition})")


def upgrade() -> None:
    # -- accounts ----------------------------------------------------------------------
    op.add_column("accounts", sa.Column("reversed", sa.BigInteger(), nullable=False,
                                        server_default="0"))
    op.execute("ALTER TABLE accounts ADD CONSTRAINT ck_accounts_reversed_not_negative"
               " CHECK (reversed >= 0)")
    _replace_check("accounts", "balance_adds_up",
                   "balance = earned + adjusted - redeemed - expired - reversed")
    # Kept per statement with the other per-type totals (0008): no REVERSE exists yet.
    op.add_column("ledger_totals", sa.Column("reversed", sa.BigInteger(), nullable=False,
                                             server_default="0"))
    earlier = _redemptions()
    for statement in earlier.totals_functions({**earlier.TOTALS, **REVERSED_TOTAL}):
        op.execute(statement)

    # -- earn rules: the activity trigger ----------------------------------------------------
    op.add_column("earn_rules", sa.Column("activity", sa.Text(), nullable=True))
    op.add_column("earn_rule_revisions", sa.Column("activity", sa.Text(), nullable=True))
    _replace_check("earn_rules", "trigger_known",
                   "trigger IN ('signup', 'order.completed', 'activity')")
    op.execute("ALTER TABLE earn_rules ADD CONSTRAINT ck_earn_rules_activity_rule_names_activity"
               " CHECK ((trigger = 'activity') = (activity IS NOT NULL))")
    op.execute("ALTER TABLE earn_rules ADD CONSTRAINT ck_earn_rules_activity_is_fixed"
               " CHECK (trigger <> 'activity' OR (kind = 'fixed' AND currency IS NULL))")
    op.execute("ALTER TABLE earn_rules ADD CONSTRAINT ck_earn_rules_activity_length"
               " CHECK (char_length(activity) BETWEEN 1 AND 100)")
    op.execute("DROP INDEX uq_earn_rules_one_active")
    op.execute("CREATE UNIQUE INDEX uq_earn_rules_one_active ON earn_rules"
               " (trigger, coalesce(currency, ''), coalesce(activity, ''))"
               " WHERE status = 'ACTIVE'")
    op.create_unique_constraint("uq_earn_rules_id_activity", "earn_rules", ["id", "activity"])

    # -- ledger entries: activity and REVERSE sources ------------------------------------------
    # `activity` itself came with staff earns (0008); an activity event's EARN uses it too.
    op.add_column("ledger_entries", sa.Column("reference_id", sa.Text(), nullable=True))
    op.add_column("ledger_entries", sa.Column("refund_id", sa.Text(), nullable=True))
    op.add_column("ledger_entries", sa.Column("reverses_entry_id", sa.Uuid(), nullable=True))
    op.create_foreign_key("fk_ledger_entries_reverses_entry_id_ledger_entries", "ledger_entries",
                          "ledger_entries", ["reverses_entry_id"], ["id"])
    op.create_foreign_key("fk_ledger_entries_rule_id_activity_earn_rules", "ledger_entries",
                          "earn_rules", ["rule_id", "activity"], ["id", "activity"])
    _replace_check("ledger_entries", "type_known", f"type IN {TYPES}")
    _replace_check("ledger_entries", "event_type_known",
                   f"event_type IS NULL OR event_type IN {EVENT_TYPES}")
    _replace_check("ledger_entries", "amount_sign",
                   "(type IN ('EARN', 'REFUND') AND amount > 0)"
                   " OR (type IN ('REDEEM', 'EXPIRE', 'REVERSE') AND amount < 0)"
                   " OR type = 'ADJUST'")
    op.execute("ALTER TABLE ledger_entries ADD CONSTRAINT ck_ledger_entries_activity_earn_has_activity"
               f" CHECK ({ACTIVITY_EARN_CHECK})")
    op.execute("ALTER TABLE ledger_entries ADD CONSTRAINT ck_ledger_entries_reverse_has_source"
               " CHECK ((type = 'REVERSE') = (reverses_entry_id IS NOT NULL) AND (type <> 'REVERSE'"
               " OR (event_type = 'order.refunded' AND event_id IS NOT NULL"
               " AND order_id IS NOT NULL AND refund_id IS NOT NULL)))")
    op.execute("CREATE UNIQUE INDEX uq_ledger_entries_one_activity_reference ON ledger_entries"
               " (account_id, activity, reference_id)"
               " WHERE type = 'EARN' AND reference_id IS NOT NULL")
    op.execute("CREATE UNIQUE INDEX uq_ledger_entries_one_reversal ON ledger_entries"
               " (account_id, order_id, refund_id) WHERE type = 'REVERSE'")

    # -- processed events -------------------------------------------------------------------
    _replace_check("processed_events", "outcome_known", f"outcome IN {OUTCOMES}")
    _replace_check("processed_events", "earned_has_entry",
                   "(outcome IN ('earned', 'reversed'))"
                   " = (ledger_entry_id IS NOT NULL AND points > 0)")
    op.execute("CREATE INDEX ix_processed_events_no_points_order ON processed_events"
               " (account_id, order_id) WHERE outcome = 'no_points' AND order_id IS NOT NULL")

    # -- order refunds ----------------------------------------------------------------------
    op.create_table(
        "order_refunds",
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("refund_id", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("amount", sa.Numeric(18, 4), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("earn_entry_id", sa.Uuid(), nullable=True),
        sa.Column("reverse_entry_id", sa.Uuid(), nullable=True),
        sa.Column("due", sa.BigInteger(), nullable=False),
        sa.Column("taken", sa.BigInteger(), nullable=False),
        sa.Column("shortfall", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_order_refunds_amount_positive")),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name=op.f("ck_order_refunds_currency_code")),
        sa.CheckConstraint("due >= 0 AND taken >= 0 AND shortfall >= 0"
                           " AND due = taken + shortfall", name=op.f("ck_order_refunds_due_adds_up")),
        sa.CheckConstraint("(taken > 0) = (reverse_entry_id IS NOT NULL)",
                           name=op.f("ck_order_refunds_taken_has_entry")),
        sa.CheckConstraint("earn_entry_id IS NOT NULL OR due = 0",
                           name=op.f("ck_order_refunds_due_has_earn")),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name="fk_order_refunds_account_id_accounts"),
        sa.ForeignKeyConstraint(["event_id"], ["processed_events.event_id"],
                                name="fk_order_refunds_event_id_processed_events"),
        sa.ForeignKeyConstraint(["earn_entry_id"], ["ledger_entries.id"],
                                name="fk_order_refunds_earn_entry_id_ledger_entries"),
        sa.ForeignKeyConstraint(["reverse_entry_id"], ["ledger_entries.id"],
                                name="fk_order_refunds_reverse_entry_id_ledger_entries"),
        sa.PrimaryKeyConstraint("account_id", "order_id", "refund_id", name="pk_order_refunds"),
        sa.UniqueConstraint("event_id", name="uq_order_refunds_event_id"),
        sa.UniqueConstraint("reverse_entry_id", name="uq_order_refunds_reverse_entry_id"),
    )
    op.execute("""
        CREATE TRIGGER order_refunds_append_only BEFORE UPDATE OR DELETE ON order_refunds
            FOR EACH ROW EXECUTE FUNCTION public.loyalty_ledger_append_only()""")

    # -- the REVERSE invariants ------------------------------------------------------------
    for statement in FUNCTIONS:
        op.execute(statement)
    op.execute("""
        CREATE TRIGGER ledger_entries_reversals_checked AFTER INSERT ON ledger_entries
            REFERENCING NEW TABLE AS new_entries
            FOR EACH STATEMENT EXECUTE FUNCTION public.loyalty_reversal_checks()""")
    op.execute("""
        CREATE CONSTRAINT TRIGGER accounts_reversed_matches_ledger
            AFTER UPDATE OF reversed ON accounts DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW WHEN (OLD.reversed IS DISTINCT FROM NEW.reversed)
            EXECUTE FUNCTION public.loyalty_reversed_matches_ledger()""")


def downgrade() -> None:
    # The older schema has no place for entries of the new kinds; the append-only ledger
    # must not lose them, so a database that has any stays at this revision.
    kept = op.get_bind().execute(sa.text(
        "SELECT count(*) FROM ledger_entries WHERE type = 'REVERSE' OR event_type = 'activity'"
    )).scalar_one()
    if kept:
        raise RuntimeError(f"{kept} REVERSE or activity entries exist; 0009 cannot be undone")
    op.execute("DROP TRIGGER accounts_reversed_matches_ledger ON accounts")
    op.execute("DROP TRIGGER ledger_entries_reversals_checked ON ledger_entries")
    op.execute("DROP FUNCTION public.loyalty_reversed_matches_ledger()")
    op.execute("DROP FUNCTION public.loyalty_reversal_checks()")
    earlier = _redemptions()
    for statement in earlier.totals_functions(earlier.TOTALS):
        op.execute(statement)
    op.drop_column("ledger_totals", "reversed")
    op.execute(RULE_REVISION_BEFORE)
    op.drop_table("order_refunds")
    op.execute("DELETE FROM processed_events WHERE event_type IN ('activity', 'order.refunded')"
               " AND ledger_entry_id IS NULL")
    op.execute("DROP INDEX ix_processed_events_no_points_order")
    _replace_check("processed_events", "earned_has_entry",
                   "(outcome = 'earned') = (ledger_entry_id IS NOT NULL AND points > 0)")
    _replace_check("processed_events", "outcome_known", f"outcome IN {OUTCOMES_BEFORE}")
    op.execute("DROP INDEX uq_ledger_entries_one_reversal")
    op.execute("DROP INDEX uq_ledger_entries_one_activity_reference")
    op.execute("ALTER TABLE ledger_entries DROP CONSTRAINT ck_ledger_entries_reverse_has_source")
    op.execute("ALTER TABLE ledger_entries DROP CONSTRAINT ck_ledger_entries_activity_earn_has_activity")
    _replace_check("ledger_entries", "amount_sign",
                   "(type IN ('EARN', 'REFUND') AND amount > 0)"
                   " OR (type IN ('REDEEM', 'EXPIRE') AND amount < 0) OR type = 'ADJUST'")
    _replace_check("ledger_entries", "event_type_known",
                   f"event_type IS NULL OR event_type IN {EVENT_TYPES_BEFORE}")
    _replace_check("ledger_entries", "type_known", f"type IN {TYPES_BEFORE}")
    op.drop_constraint("fk_ledger_entries_rule_id_activity_earn_rules", "ledger_entries",
                       type_="foreignkey")
    op.drop_constraint("fk_ledger_entries_reverses_entry_id_ledger_entries", "ledger_entries",
                       type_="foreignkey")
    for column in ("reverses_entry_id", "refund_id", "reference_id"):
        op.drop_column("ledger_entries", column)
    op.drop_constraint("uq_earn_rules_id_activity", "earn_rules", type_="unique")
    op.execute("DROP INDEX uq_earn_rules_one_active")
    op.execute("ALTER TABLE earn_rule_revisions DISABLE TRIGGER earn_rule_revisions_append_only")
    op.execute("DELETE FROM earn_rule_revisions WHERE trigger = 'activity'")
    op.execute("ALTER TABLE earn_rule_revisions ENABLE TRIGGER earn_rule_revisions_append_only")
    op.execute("DELETE FROM earn_rules WHERE trigger = 'activity'")
    op.execute("CREATE UNIQUE INDEX uq_earn_rules_one_active ON earn_rules"
               " (trigger, coalesce(currency, '')) WHERE status = 'ACTIVE'")
    for name in ("activity_length", "activity_is_fixed", "activity_rule_names_activity"):
        op.execute(f"ALTER TABLE earn_rules DROP CONSTRAINT ck_earn_rules_{name}")
    _replace_check("earn_rules", "trigger_known", "trigger IN ('signup', 'order.completed')")
    op.drop_column("earn_rule_revisions", "activity")
    op.drop_column("earn_rules", "activity")
    # Points taken back go back into the identity without them: as an adjustment would.
    op.execute("ALTER TABLE accounts DROP CONSTRAINT ck_accounts_balance_adds_up")
    op.execute("ALTER TABLE accounts DROP CONSTRAINT ck_accounts_reversed_not_negative")
    op.drop_column("accounts", "reversed")
    op.execute("ALTER TABLE accounts ADD CONSTRAINT ck_accounts_balance_adds_up"
               " CHECK (balance = earned + adjusted - redeemed - expired)")
