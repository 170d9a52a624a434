"""A ledger that no connection can bend: hardened trigger functions, seq and revision chains,
closed event types, earn rules kept as history.

- Every function is schema-qualified and runs with `search_path = pg_catalog, pg_temp`,
  so a temporary table named `accounts` can no longer stand in for the real one.
- Each entry records the account revision it produced (`account_revision`); revisions
  chain like balances, so an account's revision is 1 + its number of entries, always.
- The statement checks lock the accounts first, then refuse an entry whose seq is not
  above every earlier entry of its account or was not issued by the sequence
  (a client-chosen value), so a writer holding an older seq cannot slip in behind a
  newer one and no entry can make an account unwritable.
- `event_type` is a closed set, and an EARN's event type must be its rule's trigger
  (a composite foreign key).
- `earn_rule_revisions` keeps every revision of every rule, and order EARNs record the
  order total and currency, so `loyalty verify` can recompute each EARN.

Revision ID: 0007
Revises: 0006_defects
"""

import importlib.util
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006_defects"
branch_labels = None
depends_on = None

SAFE = "SET search_path = pg_catalog, pg_temp"

FUNCTIONS = [
    f"""
    CREATE OR REPLACE FUNCTION public.loyalty_ledger_append_only() RETURNS trigger
    LANGUAGE plpgsql {SAFE} AS $$
    BEGIN
        RAISE EXCEPTION 'ledger_entries is append-only: % is not allowed', TG_OP
            USING ERRCODE = 'integrity_constraint_violation',
                  CONSTRAINT = 'ledger_entries_append_only';
    END $$
    """,
    f"""
    CREATE OR REPLACE FUNCTION public.loyalty_revision_step() RETURNS trigger
    LANGUAGE plpgsql {SAFE} AS $$
    BEGIN
        IF NEW.revision <> OLD.revision + 1 THEN
            RAISE EXCEPTION '% revision must go from % to %, not %',
                TG_TABLE_NAME, OLD.revision, OLD.revision + 1, NEW.revision
                USING ERRCODE = 'check_violation', CONSTRAINT = TG_TABLE_NAME || '_revision_step';
        END IF;
        RETURN NEW;
    END $$
    """,
    f"""
    CREATE OR REPLACE FUNCTION public.loyalty_revision_increases() RETURNS trigger
    LANGUAGE plpgsql {SAFE} AS $$
    BEGIN
        IF NEW.revision <= OLD.revision THEN
            RAISE EXCEPTION '% revision must go up from %, not to %',
                TG_TABLE_NAME, OLD.revision, NEW.revision
                USING ERRCODE = 'check_violation', CONSTRAINT = TG_TABLE_NAME || '_revision_step';
        END IF;
        RETURN NEW;
    END $$
    """,
    # Deferred, per updated or inserted account: at COMMIT its balance and revision
    # must be those of its last entry (1 and 0 without entries).
    f"""
    CREATE OR REPLACE FUNCTION public.loyalty_balance_matches_ledger() RETURNS trigger
    LANGUAGE plpgsql {SAFE} AS $$
    DECLARE
        account uuid := (to_jsonb(NEW) ->> TG_ARGV[0])::uuid;
        cached record;
        last record;
    BEGIN
        SELECT balance, revision INTO cached FROM public.accounts WHERE id = account;
        SELECT balance_after, account_revision INTO last FROM public.ledger_entries
            WHERE account_id = account ORDER BY seq DESC LIMIT 1;
        IF cached.balance IS DISTINCT FROM COALESCE(last.balance_after, 0) THEN
            RAISE EXCEPTION 'account % balance % does not match its ledger (%)',
                account, cached.balance, COALESCE(last.balance_after, 0)
                USING ERRCODE = 'check_violation', CONSTRAINT = 'accounts_balance_matches_ledger';
        END IF;
        IF cached.revision IS DISTINCT FROM COALESCE(last.account_revision, 1) THEN
            RAISE EXCEPTION 'account % revision % does not match its ledger (%)',
                account, cached.revision, COALESCE(last.account_revision, 1)
                USING ERRCODE = 'check_violation', CONSTRAINT = 'accounts_revision_matches_ledger';
        END IF;
        RETURN NULL;
    END $$
    """,
    f"""
    CREATE OR REPLACE FUNCTION public.loyalty_ledger_statement_checks() RETURNS trigger
    LANGUAGE plpgsql {SAFE} AS $$
    DECLARE
        bad record;
        issued bigint;
    BEGIN
        -- Serialise writers of these accounts, even ones that skipped the application,
        -- before anything of their ledgers is read.
        -- NO KEY UPDATE, as the UPDATE of an account takes: it does not wait for the key
        -- share that another transaction's foreign-key check holds, so it cannot deadlock
        -- with it.
        PERFORM 1 FROM public.accounts WHERE id IN (SELECT account_id FROM new_entries)
            ORDER BY id FOR NO KEY UPDATE;
        -- A seq the sequence never issued was chosen by the client.
        issued := pg_catalog.pg_sequence_last_value('public.ledger_entries_seq_seq'::regclass);
        SELECT n.account_id, n.seq INTO bad FROM new_entries n
            WHERE n.seq > COALESCE(issued, 0) LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'ledger entry seq % for account % was not issued by the sequence',
                bad.seq, bad.account_id
                USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_entries_seq_issued';
        END IF;
        -- Every new entry must come after every entry its account already had.
        SELECT s.account_id, s.first_seq INTO bad
            FROM (SELECT account_id, min(seq) AS first_seq, count(*) AS added
                  FROM new_entries GROUP BY account_id) s
            WHERE (SELECT count(*) FROM public.ledger_entries e
                   WHERE e.account_id = s.account_id AND e.seq >= s.first_seq) <> s.added
            LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'ledger entry seq % for account % is not above its last entry',
                bad.first_seq, bad.account_id
                USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_entries_seq_order';
        END IF;
        SELECT n.account_id, n.amount, n.balance_after, n.account_revision,
               COALESCE(p.balance_after, 0) AS previous,
               COALESCE(p.account_revision, 1) AS previous_revision
            INTO bad
            FROM new_entries n
            LEFT JOIN LATERAL (
                SELECT e.balance_after, e.account_revision FROM public.ledger_entries e
                WHERE e.account_id = n.account_id AND e.seq < n.seq
                ORDER BY e.seq DESC LIMIT 1
            ) p ON true
            WHERE COALESCE(p.balance_after, 0) + n.amount <> n.balance_after
               OR COALESCE(p.account_revision, 1) + 1 <> n.account_revision
            LIMIT 1;
        IF FOUND THEN
            IF bad.previous + bad.amount <> bad.balance_after THEN
                RAISE EXCEPTION 'ledger chain broken for account %: % + % <> %',
                    bad.account_id, bad.previous, bad.amount, bad.balance_after
                    USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_entries_balance_chain';
            END IF;
            RAISE EXCEPTION 'revision chain broken for account %: % + 1 <> %',
                bad.account_id, bad.previous_revision, bad.account_revision
                USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_entries_revision_chain';
        END IF;
        SELECT a.id, a.balance, a.revision, l.balance_after, l.account_revision INTO bad
            FROM public.accounts a
            JOIN LATERAL (
                SELECT e.balance_after, e.account_revision FROM public.ledger_entries e
                WHERE e.account_id = a.id ORDER BY e.seq DESC LIMIT 1
            ) l ON true
            WHERE a.id IN (SELECT account_id FROM new_entries)
              AND (a.balance <> l.balance_after OR a.revision <> l.account_revision)
            LIMIT 1;
        IF FOUND THEN
            IF bad.balance <> bad.balance_after THEN
                RAISE EXCEPTION 'account % balance % does not match its ledger (%)',
                    bad.id, bad.balance, bad.balance_after
                    USING ERRCODE = 'check_violation', CONSTRAINT = 'accounts_balance_matches_ledger';
            END IF;
            RAISE EXCEPTION 'account % revision % does not match its ledger (%)',
                bad.id, bad.revision, bad.account_revision
                USING ERRCODE = 'check_violation', CONSTRAINT = 'accounts_revision_matches_ledger';
        END IF;
        RETURN NULL;
    END $$
    """,
    # Runs as the schema owner: the application may read rule history, never write it.
    f"""
    CREATE OR REPLACE FUNCTION public.loyalty_record_rule_revision() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER {SAFE} AS $$
    BEGIN
        INSERT INTO public.earn_rule_revisions
            (rule_id, revision, trigger, kind, points, money_amount, currency, status)
        VALUES (NEW.id, NEW.revision, NEW.trigger, NEW.kind, NEW.points, NEW.money_amount,
                NEW.currency, NEW.status);
        RETURN NULL;
    END $$
    """,
]

EVENT_TYPES = "event_type IN ('signup', 'order.completed')"


def upgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS ledger_entries_balance_chain ON ledger_entries")
    op.execute("DROP FUNCTION IF EXISTS loyalty_ledger_chain()")
    for statement in FUNCTIONS:
        op.execute(statement)

    # The revision each entry produced, filled in for the entries there are.
    op.add_column("ledger_entries", sa.Column("account_revision", sa.BigInteger(), nullable=True))
    op.add_column("ledger_entries", sa.Column("order_total", sa.Numeric(18, 4), nullable=True))
    op.add_column("ledger_entries", sa.Column("currency", sa.Text(), nullable=True))
    op.execute("ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_append_only")
    op.execute("""
        UPDATE ledger_entries e SET account_revision = 1 + r.position
        FROM (SELECT id, row_number() OVER (PARTITION BY account_id ORDER BY seq) AS position
              FROM ledger_entries) r
        WHERE r.id = e.id""")
    op.execute("ALTER TABLE ledger_entries ENABLE TRIGGER ledger_entries_append_only")
    op.alter_column("ledger_entries", "account_revision", nullable=False)
    op.create_check_constraint(op.f("ck_ledger_entries_account_revision_after_first"), "ledger_entries",
                               "account_revision >= 2")
    op.create_check_constraint(op.f("ck_ledger_entries_seq_positive"), "ledger_entries", "seq > 0")
    op.create_check_constraint(op.f("ck_ledger_entries_event_type_known"), "ledger_entries",
                               f"event_type IS NULL OR {EVENT_TYPES}")
    # New order EARNs carry what they were computed from; the ones written before this
    # migration (up to its last seq) cannot. Not `NOT VALID`: SQLAlchemy cannot reflect it.
    last_seq = op.get_bind().execute(
        sa.text("SELECT COALESCE(max(seq), 0) FROM ledger_entries")).scalar_one()
    op.create_check_constraint(
        op.f("ck_ledger_entries_order_earn_has_total"), "ledger_entries",
        "type <> 'EARN' OR event_type <> 'order.completed'"
        f" OR (order_total IS NOT NULL AND currency IS NOT NULL) OR seq <= {int(last_seq)}")

    # An EARN's event type is its rule's trigger.
    op.create_unique_constraint(op.f("uq_earn_rules_id_trigger"), "earn_rules", ["id", "trigger"])
    op.drop_constraint(op.f("fk_ledger_entries_rule_id_earn_rules"), "ledger_entries",
                       type_="foreignkey")
    op.create_foreign_key(op.f("fk_ledger_entries_rule_id_earn_rules"), "ledger_entries", "earn_rules",
                          ["rule_id", "event_type"], ["id", "trigger"])

    op.create_table(
        "earn_rule_revisions",
        sa.Column("rule_id", sa.BigInteger(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("trigger", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("money_amount", sa.Numeric(18, 4), nullable=True),
        sa.Column("currency", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.ForeignKeyConstraint(["rule_id"], ["earn_rules.id"],
                                name="fk_earn_rule_revisions_rule_id_earn_rules"),
        sa.PrimaryKeyConstraint("rule_id", "revision", name="pk_earn_rule_revisions"),
    )
    op.execute("""
        INSERT INTO earn_rule_revisions (rule_id, revision, trigger, kind, points, money_amount,
                                         currency, status)
        SELECT id, revision, trigger, kind, points, money_amount, currency, status FROM earn_rules""")
    op.execute("""
        CREATE TRIGGER earn_rules_history AFTER INSERT OR UPDATE ON earn_rules
            FOR EACH ROW EXECUTE FUNCTION public.loyalty_record_rule_revision()""")
    op.execute("""
        CREATE TRIGGER earn_rule_revisions_append_only BEFORE UPDATE OR DELETE ON earn_rule_revisions
            FOR EACH ROW EXECUTE FUNCTION public.loyalty_ledger_append_only()""")


def downgrade() -> None:
    op.execute("DROP TRIGGER earn_rule_revisions_append_only ON earn_rule_revisions")
    op.execute("DROP TRIGGER earn_rules_history ON earn_rules")
    op.drop_table("earn_rule_revisions")
    op.execute("DROP FUNCTION public.loyalty_record_rule_revision()")
    op.drop_constraint(op.f("fk_ledger_entries_rule_id_earn_rules"), "ledger_entries",
                       type_="foreignkey")
    op.create_foreign_key(op.f("fk_ledger_entries_rule_id_earn_rules"), "ledger_entries", "earn_rules",
                          ["rule_id"], ["id"])
    op.drop_constraint(op.f("uq_earn_rules_id_trigger"), "earn_rules", type_="unique")
    for name in ("order_earn_has_total", "event_type_known", "seq_positive",
                 "account_revision_after_first"):
        op.drop_constraint(op.f(f"ck_ledger_entries_{name}"), "ledger_entries", type_="check")
    op.drop_column("ledger_entries", "currency")
    op.drop_column("ledger_entries", "order_total")
    op.drop_column("ledger_entries", "account_revision")
    # The functions as 0001 and 0004 made them, which read no revision columns.
    op.execute(_earlier("0004_statement_level_ledger_checks", "CHECKS"))
    for statement in _earlier("0001_ledger_schema", "INVARIANTS"):
        if "CREATE OR REPLACE FUNCTION loyalty_balance_matches_ledger()" in statement \
                or "CREATE OR REPLACE FUNCTION loyalty_ledger_chain()" in statement:
            op.execute(statement)


def _earlier(module: str, name: str) -> Any:
    """A statement of an earlier migration, as CREATE OR REPLACE."""
    path = Path(__file__).with_name(f"{module}.py")
    spec = importlib.util.spec_from_file_location(f"loyalty_migration_{module}", path)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    value = getattr(loaded, name)
    if isinstance(value, str):
        return value.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION")
    return [v.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION") for v in value]
