"""Points go out: rewards, redemptions and their refunds, staff earns, and per-type totals
that PostgreSQL keeps exact.

- `rewards`: the catalogue (`discount_amount`, `discount_percent`, `free_shipping`,
  `custom`), with a revision that steps by one on every change.
- `redemptions`: one per REDEEM entry, one to one in both directions. A redemption
  refers to its REDEEM (same account, same points) and, once refunded, to its REFUND;
  at COMMIT every REDEEM and REFUND entry must have its redemption (a deferred
  constraint trigger that fires for those two types only). A redemption only ever
  changes from ISSUED to REFUNDED, and is never deleted.
- A REFUND entry names the REDEEM it gives back (`refunds_entry_id`, unique: at most one
  REFUND per REDEEM); a statement trigger refuses one whose REDEEM is of another
  account or another amount.
- An EARN may also be a staff earn: no event and no rule, an `activity` and an `actor`.
- `ledger_totals`: each account's per-type sums of its ledger, kept by a statement
  trigger (owned by the schema owner; the application may only read it) as entries are
  inserted, and each account written must then carry exactly those in `earned`,
  `adjusted`, `redeemed` and `expired`: one set-based statement per INSERT, O(1) per
  account however long its ledger. Any later change of the account moves its revision
  past its ledger's, which the COMMIT check refuses; an account without entries must
  have no totals (checked at COMMIT).
  `TOTALS` below is the one place that says how each entry type counts; a new total
  (say `reversed`) is a column on both tables plus one line there, rendered again by
  `totals_functions`.
- `adjust_requests` becomes `staff_requests`, the first result of every staff request
  (adjust, create, earn, redeem, refund), with the task it was for: one request_id
  has one result whatever the task.

Revision ID: 0008
Revises: 0007
"""

import importlib.util
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SAFE = "SET search_path = pg_catalog, pg_temp"

#: How each entry type counts towards an account's totals: the one place to add one.
TOTALS: dict[str, str] = {
    "earned": "sum(amount) FILTER (WHERE type = 'EARN')",
    "adjusted": "sum(amount) FILTER (WHERE type = 'ADJUST')",
    # Net: what was redeemed minus what refunds gave back.
    "redeemed": "-sum(amount) FILTER (WHERE type IN ('REDEEM', 'REFUND'))",
    "expired": "-sum(amount) FILTER (WHERE type = 'EXPIRE')",
}

CODE = "^[2-9A-HJKMNP-TV-Z]{4}(-[2-9A-HJKMNP-TV-Z]{4}){3}$"


def totals_functions(totals: dict[str, str]) -> list[str]:
    """The two functions that keep and check the per-type totals, for these totals."""
    names = list(totals)
    cols = ", ".join(names)
    sums = ", ".join(f"COALESCE({expr}, 0)" for expr in totals.values())
    added = ", ".join(f"{n} = t.{n} + EXCLUDED.{n}" for n in names)
    cached = ", ".join(f"a.{n}" for n in names)
    kept = ", ".join(f"t.{n}" for n in names)
    zeros = ", ".join("0" for _ in names)
    return [
        # Per INSERT statement, after `ledger_entries_checked` has locked the accounts:
        # the new entries' sums are added to the kept totals, and every account written
        # must then carry exactly those. Runs as the schema owner: the application may
        # read ledger_totals, never write it.
        f"""
        CREATE OR REPLACE FUNCTION public.loyalty_ledger_totals() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER {SAFE} AS $$
        DECLARE
            bad record;
        BEGIN
            INSERT INTO public.ledger_totals AS t (account_id, {cols})
                SELECT account_id, {sums} FROM new_entries GROUP BY account_id
                ON CONFLICT (account_id) DO UPDATE SET {added};
            SELECT a.id, ROW({cached}) AS cached, ROW({kept}) AS kept INTO bad
                FROM public.accounts a JOIN public.ledger_totals t ON t.account_id = a.id
                WHERE a.id IN (SELECT account_id FROM new_entries)
                  AND ROW({cached}) IS DISTINCT FROM ROW({kept})
                LIMIT 1;
            IF FOUND THEN
                RAISE EXCEPTION 'account % totals ({cols}) = % do not match its ledger (%)',
                    bad.id, bad.cached, bad.kept
                    USING ERRCODE = 'check_violation',
                          CONSTRAINT = 'accounts_totals_match_ledger';
            END IF;
            RETURN NULL;
        END $$
        """,
        # Deferred, per updated or inserted account: at COMMIT its balance and revision
        # must be those of its last entry. Its totals were checked by the last INSERT of
        # its entries (any later UPDATE moves its revision past its ledger's, refused
        # here); an account without entries must have none.
        f"""
        CREATE OR REPLACE FUNCTION public.loyalty_balance_matches_ledger() RETURNS trigger
        LANGUAGE plpgsql {SAFE} AS $$
        DECLARE
            account uuid := (to_jsonb(NEW) ->> TG_ARGV[0])::uuid;
            a record;
            last record;
        BEGIN
            SELECT * INTO a FROM public.accounts WHERE id = account;
            SELECT balance_after, account_revision INTO last FROM public.ledger_entries
                WHERE account_id = account ORDER BY seq DESC LIMIT 1;
            IF NOT FOUND AND ROW({cached}) IS DISTINCT FROM ROW({zeros}) THEN
                RAISE EXCEPTION 'account % has no ledger entries but totals ({cols}) = %',
                    account, ROW({cached})
                    USING ERRCODE = 'check_violation',
                          CONSTRAINT = 'accounts_totals_match_ledger';
            END IF;
            IF a.balance IS DISTINCT FROM COALESCE(last.balance_after, 0) THEN
                RAISE EXCEPTION 'account % balance % does not match its ledger (%)',
                    account, a.balance, COALESCE(last.balance_after, 0)
                    USING ERRCODE = 'check_violation',
                          CONSTRAINT = 'accounts_balance_matches_ledger';
            END IF;
            IF a.revision IS DISTINCT FROM COALESCE(last.account_revision, 1) THEN
                RAISE EXCEPTION 'account % revision % does not match its ledger (%)',
                    account, a.revision, COALESCE(last.account_revision, 1)
                    USING ERRCODE = 'check_violation',
                          CONSTRAINT = 'accounts_revision_matches_ledger';
            END IF;
            RETURN NULL;
        END $$
        """,
    ]


FUNCTIONS = [
    # A REFUND gives back exactly one REDEEM of its own account.
    f"""
    CREATE OR REPLACE FUNCTION public.loyalty_ledger_refund_checks() RETURNS trigger
    LANGUAGE plpgsql {SAFE} AS $$
    DECLARE
        bad record;
    BEGIN
        SELECT n.id, n.account_id, n.amount, r.id AS redeem_id, r.type AS redeem_type,
               r.account_id AS redeem_account, r.amount AS redeem_amount
            INTO bad
            FROM new_entries n
            LEFT JOIN public.ledger_entries r ON r.id = n.refunds_entry_id
            WHERE n.type = 'REFUND'
              AND (r.id IS NULL OR r.type <> 'REDEEM' OR r.account_id <> n.account_id
                   OR r.amount <> -n.amount)
            LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'REFUND % (% points, account %) must give back a REDEEM of its'
                ' account, and exactly its points; it names % (%, % points, account %)',
                bad.id, bad.amount, bad.account_id, bad.redeem_id, bad.redeem_type,
                bad.redeem_amount, bad.redeem_account
                USING ERRCODE = 'check_violation',
                      CONSTRAINT = 'ledger_entries_refund_matches_redeem';
        END IF;
        RETURN NULL;
    END $$
    """,
    # Deferred, per REDEEM or REFUND entry: at COMMIT its redemption exists and names it.
    f"""
    CREATE OR REPLACE FUNCTION public.loyalty_entry_has_redemption() RETURNS trigger
    LANGUAGE plpgsql {SAFE} AS $$
    BEGIN
        IF NEW.type = 'REDEEM' AND NOT EXISTS (
                SELECT 1 FROM public.redemptions WHERE redeem_entry_id = NEW.id) THEN
            RAISE EXCEPTION 'REDEEM entry % has no redemption', NEW.id
                USING ERRCODE = 'check_violation',
                      CONSTRAINT = 'ledger_entries_redemption_matches';
        END IF;
        IF NEW.type = 'REFUND' AND NOT EXISTS (
                SELECT 1 FROM public.redemptions
                WHERE redeem_entry_id = NEW.refunds_entry_id AND refund_entry_id = NEW.id) THEN
            RAISE EXCEPTION 'REFUND entry % is not the refund of the redemption of %',
                NEW.id, NEW.refunds_entry_id
                USING ERRCODE = 'check_violation',
                      CONSTRAINT = 'ledger_entries_redemption_matches';
        END IF;
        RETURN NULL;
    END $$
    """,
    # A redemption matches its entries: its REDEEM (same account, its points) and, once
    # refunded, the REFUND of that REDEEM.
    f"""
    CREATE OR REPLACE FUNCTION public.loyalty_redemption_matches_entries() RETURNS trigger
    LANGUAGE plpgsql {SAFE} AS $$
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM public.ledger_entries e WHERE e.id = NEW.redeem_entry_id
                       AND e.type = 'REDEEM' AND e.account_id = NEW.account_id
                       AND e.amount = -NEW.points) THEN
            RAISE EXCEPTION 'redemption % must name a REDEEM entry of account % for % points',
                NEW.id, NEW.account_id, NEW.points
                USING ERRCODE = 'check_violation',
                      CONSTRAINT = 'redemptions_match_entries';
        END IF;
        IF NEW.refund_entry_id IS NOT NULL AND NOT EXISTS (
                SELECT 1 FROM public.ledger_entries e WHERE e.id = NEW.refund_entry_id
                AND e.type = 'REFUND' AND e.refunds_entry_id = NEW.redeem_entry_id) THEN
            RAISE EXCEPTION 'redemption % must name the REFUND of its REDEEM entry', NEW.id
                USING ERRCODE = 'check_violation',
                      CONSTRAINT = 'redemptions_match_entries';
        END IF;
        RETURN NULL;
    END $$
    """,
    # Issued, then perhaps refunded: nothing else about a redemption ever changes.
    f"""
    CREATE OR REPLACE FUNCTION public.loyalty_redemption_refund_only() RETURNS trigger
    LANGUAGE plpgsql {SAFE} AS $$
    BEGIN
        IF TG_OP <> 'UPDATE' THEN
            RAISE EXCEPTION 'redemptions are kept: % is not allowed', TG_OP
                USING ERRCODE = 'integrity_constraint_violation',
                      CONSTRAINT = 'redemptions_refund_only';
        END IF;
        IF OLD.status <> 'ISSUED' OR NEW.status <> 'REFUNDED'
           OR (to_jsonb(NEW) - 'status' - 'refund_entry_id' - 'refunded_at')
              IS DISTINCT FROM (to_jsonb(OLD) - 'status' - 'refund_entry_id' - 'refunded_at') THEN
            RAISE EXCEPTION 'a redemption only goes from ISSUED to REFUNDED, and nothing'
                ' else of it changes'
                USING ERRCODE = 'integrity_constraint_violation',
                      CONSTRAINT = 'redemptions_refund_only';
        END IF;
        RETURN NEW;
    END $$
    """,
]

ENTRY_CHECKS_BEFORE = {
    "earn_has_source": "type <> 'EARN' OR (event_type IS NOT NULL AND event_id IS NOT NULL"
                       " AND rule_id IS NOT NULL AND rule_revision IS NOT NULL)",
}
ENTRY_CHECKS = {
    # An event's EARN names its event and rule; a staff earn names neither, but an
    # activity and the staff member (the composite rule foreign key is not checked
    # while rule_id is NULL, so this CHECK is what keeps a staff earn rule-less).
    "earn_has_source": "type <> 'EARN' OR (event_type IS NOT NULL AND event_id IS NOT NULL"
                       " AND rule_id IS NOT NULL AND rule_revision IS NOT NULL)"
                       " OR (activity IS NOT NULL AND actor IS NOT NULL AND event_type IS NULL"
                       " AND event_id IS NULL AND rule_id IS NULL AND rule_revision IS NULL)",
    "activity_length": "char_length(activity) BETWEEN 1 AND 100",
    "refund_names_redeem": "(type = 'REFUND') = (refunds_entry_id IS NOT NULL)",
    "staff_entry_has_actor": "type NOT IN ('REDEEM', 'REFUND') OR actor IS NOT NULL",
}


def upgrade() -> None:
    # -- staff requests: one table for every staff task's first result ----------------
    op.execute("ALTER TABLE adjust_requests RENAME TO staff_requests")
    for old, new in (("pk_adjust_requests", "pk_staff_requests"),
                     ("ck_adjust_requests_request_id_length",
                      "ck_staff_requests_request_id_length"),
                     ("ck_adjust_requests_applied_has_entry", "ck_staff_requests_applied_has_entry"),
                     ("fk_adjust_requests_ledger_entry_id_ledger_entries",
                      "fk_staff_requests_ledger_entry_id_ledger_entries")):
        op.execute(f"ALTER TABLE staff_requests RENAME CONSTRAINT {old} TO {new}")
    op.execute("ALTER TABLE staff_requests DROP CONSTRAINT ck_adjust_requests_status_known")
    op.execute("ALTER TABLE staff_requests ADD CONSTRAINT ck_staff_requests_status_known"
               " CHECK (status IN ('applied', 'rejected', 'created', 'existing'))")
    op.add_column("staff_requests", sa.Column(
        "task", sa.Text(), nullable=False, server_default="loyalty.accounts.adjust_points"))
    op.alter_column("staff_requests", "task", server_default=None)

    # -- rewards -------------------------------------------------------------------------
    op.create_table(
        "rewards",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("value", sa.Numeric(18, 4), nullable=True),
        sa.Column("currency", sa.Text(), nullable=True),
        sa.Column("cost_in_points", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Text(), server_default="ACTIVE", nullable=False),
        sa.Column("revision", sa.BigInteger(), server_default="1", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("char_length(name) BETWEEN 1 AND 100", name=op.f("ck_rewards_name_length")),
        sa.CheckConstraint("kind IN ('discount_amount', 'discount_percent', 'free_shipping',"
                           " 'custom')", name=op.f("ck_rewards_kind_known")),
        sa.CheckConstraint(
            "(kind = 'discount_amount' AND value > 0 AND currency IS NOT NULL)"
            " OR (kind = 'discount_percent' AND value BETWEEN 1 AND 100 AND currency IS NULL)"
            " OR (kind IN ('free_shipping', 'custom') AND value IS NULL AND currency IS NULL)",
            name=op.f("ck_rewards_kind_shape")),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name=op.f("ck_rewards_currency_code")),
        sa.CheckConstraint("cost_in_points BETWEEN 1 AND 9999999",
                           name=op.f("ck_rewards_cost_in_points_range")),
        sa.CheckConstraint("status IN ('ACTIVE', 'PAUSED')", name=op.f("ck_rewards_status_known")),
        sa.CheckConstraint("revision >= 1", name=op.f("ck_rewards_revision_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rewards")),
    )
    op.execute("""
        CREATE TRIGGER rewards_revision_step BEFORE UPDATE ON rewards
            FOR EACH ROW EXECUTE FUNCTION public.loyalty_revision_step()""")

    # -- ledger entries: refunds name their REDEEM, staff earns their activity ------------
    op.add_column("ledger_entries", sa.Column("refunds_entry_id", UUID(as_uuid=True),
                                              nullable=True))
    op.add_column("ledger_entries", sa.Column("activity", sa.Text(), nullable=True))
    op.create_foreign_key("fk_ledger_entries_refunds_entry_id_ledger_entries", "ledger_entries",
                          "ledger_entries", ["refunds_entry_id"], ["id"])
    op.create_unique_constraint("uq_ledger_entries_refunds_entry_id", "ledger_entries",
                                ["refunds_entry_id"])
    for name in ENTRY_CHECKS_BEFORE:
        op.drop_constraint(op.f(f"ck_ledger_entries_{name}"), "ledger_entries", type_="check")
    for name, check in ENTRY_CHECKS.items():
        op.create_check_constraint(op.f(f"ck_ledger_entries_{name}"), "ledger_entries", check)

    # -- redemptions -----------------------------------------------------------------------
    op.create_table(
        "redemptions",
        sa.Column("id", UUID(as_uuid=True), server_default=sa.text("gen_random_uuid()"),
                  nullable=False),
        sa.Column("account_id", UUID(as_uuid=True), nullable=False),
        sa.Column("reward_id", sa.BigInteger(), nullable=True),
        sa.Column("reward_revision", sa.BigInteger(), nullable=True),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="ISSUED", nullable=False),
        sa.Column("reference_id", sa.Text(), nullable=True),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("redeem_entry_id", UUID(as_uuid=True), nullable=False),
        sa.Column("refund_entry_id", UUID(as_uuid=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("refunded_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("points BETWEEN 1 AND 999999999", name=op.f("ck_redemptions_points_range")),
        sa.CheckConstraint("count BETWEEN 1 AND 100", name=op.f("ck_redemptions_count_range")),
        sa.CheckConstraint("reward_id IS NOT NULL OR count = 1",
                           name=op.f("ck_redemptions_amount_is_one")),
        sa.CheckConstraint("(reward_id IS NULL) = (reward_revision IS NULL)",
                           name=op.f("ck_redemptions_reward_has_revision")),
        sa.CheckConstraint(f"code ~ '{CODE}'", name=op.f("ck_redemptions_code_format")),
        sa.CheckConstraint("status IN ('ISSUED', 'REFUNDED')", name=op.f("ck_redemptions_status_known")),
        sa.CheckConstraint("(status = 'REFUNDED') = (refund_entry_id IS NOT NULL"
                           " AND refunded_at IS NOT NULL)", name=op.f("ck_redemptions_refund_shape")),
        sa.CheckConstraint("char_length(reference_id) BETWEEN 1 AND 256",
                           name=op.f("ck_redemptions_reference_id_length")),
        sa.CheckConstraint("char_length(request_id) BETWEEN 1 AND 256",
                           name=op.f("ck_redemptions_request_id_length")),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name=op.f("fk_redemptions_account_id_accounts")),
        sa.ForeignKeyConstraint(["reward_id"], ["rewards.id"],
                                name=op.f("fk_redemptions_reward_id_rewards")),
        sa.ForeignKeyConstraint(["redeem_entry_id"], ["ledger_entries.id"],
                                name=op.f("fk_redemptions_redeem_entry_id_ledger_entries")),
        sa.ForeignKeyConstraint(["refund_entry_id"], ["ledger_entries.id"],
                                name=op.f("fk_redemptions_refund_entry_id_ledger_entries")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_redemptions")),
        sa.UniqueConstraint("code", name=op.f("uq_redemptions_code")),
        sa.UniqueConstraint("request_id", name=op.f("uq_redemptions_request_id")),
        sa.UniqueConstraint("redeem_entry_id", name=op.f("uq_redemptions_redeem_entry_id")),
        sa.UniqueConstraint("refund_entry_id", name=op.f("uq_redemptions_refund_entry_id")),
    )
    op.create_index("ix_redemptions_account_id_created_at", "redemptions",
                    ["account_id", "created_at"])

    # -- per-type totals, kept by the database --------------------------------------------
    op.create_table(
        "ledger_totals",
        sa.Column("account_id", UUID(as_uuid=True), nullable=False),
        *(sa.Column(name, sa.BigInteger(), server_default="0", nullable=False)
          for name in TOTALS),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name=op.f("fk_ledger_totals_account_id_accounts")),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_ledger_totals")),
    )
    sums = ", ".join(f"COALESCE({expr}, 0)" for expr in TOTALS.values())
    op.execute(f"INSERT INTO ledger_totals (account_id, {', '.join(TOTALS)})"
               f" SELECT account_id, {sums} FROM ledger_entries GROUP BY account_id")

    for statement in [*FUNCTIONS, *totals_functions(TOTALS)]:
        op.execute(statement)
    # Statement triggers of one event fire in name order: `ledger_entries_checked` (0007)
    # locks the accounts before these read anything.
    op.execute("""
        CREATE TRIGGER ledger_entries_refunds AFTER INSERT ON ledger_entries
            REFERENCING NEW TABLE AS new_entries
            FOR EACH STATEMENT EXECUTE FUNCTION public.loyalty_ledger_refund_checks()""")
    op.execute("""
        CREATE TRIGGER ledger_entries_totals AFTER INSERT ON ledger_entries
            REFERENCING NEW TABLE AS new_entries
            FOR EACH STATEMENT EXECUTE FUNCTION public.loyalty_ledger_totals()""")
    op.execute("""
        CREATE CONSTRAINT TRIGGER ledger_entries_redemption_matches
            AFTER INSERT ON ledger_entries DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW WHEN (NEW.type IN ('REDEEM', 'REFUND'))
            EXECUTE FUNCTION public.loyalty_entry_has_redemption()""")
    op.execute("""
        CREATE TRIGGER redemptions_match_entries AFTER INSERT OR UPDATE ON redemptions
            FOR EACH ROW EXECUTE FUNCTION public.loyalty_redemption_matches_entries()""")
    op.execute("""
        CREATE TRIGGER redemptions_refund_only BEFORE UPDATE OR DELETE ON redemptions
            FOR EACH ROW EXECUTE FUNCTION public.loyalty_redemption_refund_only()""")
    op.execute("""
        CREATE TRIGGER redemptions_no_truncate BEFORE TRUNCATE ON redemptions
            FOR EACH STATEMENT EXECUTE FUNCTION public.loyalty_redemption_refund_only()""")


def downgrade() -> None:
    op.execute("DROP TRIGGER ledger_entries_redemption_matches ON ledger_entries")
    op.execute("DROP TRIGGER ledger_entries_totals ON ledger_entries")
    op.execute("DROP TRIGGER ledger_entries_refunds ON ledger_entries")
    op.drop_table("ledger_totals")
    op.drop_table("redemptions")
    for name in ("loyalty_redemption_refund_only", "loyalty_redemption_matches_entries",
                 "loyalty_entry_has_redemption", "loyalty_ledger_refund_checks",
                 "loyalty_ledger_totals"):
        op.execute(f"DROP FUNCTION public.{name}()")
    for statement in _earlier("0007_hardened_ledger", "FUNCTIONS"):
        if "loyalty_balance_matches_ledger()" in statement:
            op.execute(statement)
    for name in ENTRY_CHECKS:
        op.drop_constraint(op.f(f"ck_ledger_entries_{name}"), "ledger_entries", type_="check")
    for name, check in ENTRY_CHECKS_BEFORE.items():
        op.create_check_constraint(op.f(f"ck_ledger_entries_{name}"), "ledger_entries", check)
    op.drop_constraint("uq_ledger_entries_refunds_entry_id", "ledger_entries", type_="unique")
    op.drop_constraint("fk_ledger_entries_refunds_entry_id_ledger_entries", "ledger_entries",
                       type_="foreignkey")
    op.drop_column("ledger_entries", "activity")
    op.drop_column("ledger_entries", "refunds_entry_id")
    op.drop_table("rewards")
    op.drop_column("staff_requests", "task")
    op.execute("ALTER TABLE staff_requests DROP CONSTRAINT ck_staff_requests_status_known")
    op.execute("ALTER TABLE staff_requests ADD CONSTRAINT ck_adjust_requests_status_known"
               " CHECK (status IN ('applied', 'rejected'))")
    for old, new in (("pk_adjust_requests", "pk_staff_requests"),
                     ("ck_adjust_requests_request_id_length",
                      "ck_staff_requests_request_id_length"),
                     ("ck_adjust_requests_applied_has_entry", "ck_staff_requests_applied_has_entry"),
                     ("fk_adjust_requests_ledger_entry_id_ledger_entries",
                      "fk_staff_requests_ledger_entry_id_ledger_entries")):
        op.execute(f"ALTER TABLE staff_requests RENAME CONSTRAINT {new} TO {old}")
    op.execute("ALTER TABLE staff_requests RENAME TO adjust_requests")


def _earlier(module: str, name: str) -> Any:
    path = Path(__file__).with_name(f"{module}.py")
    spec = importlib.util.spec_from_file_location(f"loyalty_migration_{module}", path)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return getattr(loaded, name)
