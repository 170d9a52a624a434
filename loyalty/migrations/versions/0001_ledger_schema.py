"""Ledger schema: tables, invariants the CHECKs cannot express, and the default earn rules.

Revision ID: 0001
Revises:
Create Date: 2026-11-25 22:14:34.821796
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "contacts",
        sa.Column("contact_id", sa.Text(), nullable=False),
        sa.Column("member_id", sa.Text(), nullable=True),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("profile_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "char_length(contact_id) BETWEEN 1 AND 256", name=op.f("ck_contacts_contact_id_length")
        ),
        sa.CheckConstraint(
            "char_length(member_id) BETWEEN 1 AND 256", name=op.f("ck_contacts_member_id_length")
        ),
        sa.PrimaryKeyConstraint("contact_id", name=op.f("pk_contacts")),
    )
    op.create_index(
        "uq_contacts_member_id",
        "contacts",
        ["member_id"],
        unique=True,
        postgresql_where=sa.text("member_id IS NOT NULL"),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("task_name", sa.Text(), nullable=True),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column(
            "headers",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("error_detail", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="1", nullable=False),
        sa.Column(
            "first_failed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "last_failed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column("replay_outcome", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("discarded_by", sa.Text(), nullable=True),
        sa.Column("discard_reason", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'replayed', 'discarded')",
            name=op.f("ck_dead_letters_status_known"),
        ),
        sa.CheckConstraint("attempts >= 1", name=op.f("ck_dead_letters_attempts_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
    )
    op.create_index(
        "ix_dead_letters_reason_status", "dead_letters", ["reason", "status"], unique=False
    )
    op.create_index(
        "uq_dead_letters_message_id",
        "dead_letters",
        ["message_id"],
        unique=True,
        postgresql_where=sa.text("message_id IS NOT NULL"),
    )
    op.create_table(
        "earn_rules",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("trigger", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("money_amount", sa.Numeric(precision=18, scale=4), nullable=True),
        sa.Column("currency", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), server_default="ACTIVE", nullable=False),
        sa.Column("revision", sa.BigInteger(), server_default="1", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "(kind = 'fixed' AND money_amount IS NULL) OR (kind = 'conversion' AND money_amount > 0)",
            name=op.f("ck_earn_rules_kind_shape"),
        ),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name=op.f("ck_earn_rules_currency_code")),
        sa.CheckConstraint(
            "kind IN ('fixed', 'conversion')", name=op.f("ck_earn_rules_kind_known")
        ),
        sa.CheckConstraint(
            "status IN ('ACTIVE', 'PAUSED')", name=op.f("ck_earn_rules_status_known")
        ),
        sa.CheckConstraint(
            "trigger <> 'signup' OR (kind = 'fixed' AND currency IS NULL)",
            name=op.f("ck_earn_rules_signup_is_fixed"),
        ),
        sa.CheckConstraint(
            "trigger IN ('signup', 'order.completed')", name=op.f("ck_earn_rules_trigger_known")
        ),
        sa.CheckConstraint(
            "char_length(name) BETWEEN 1 AND 100", name=op.f("ck_earn_rules_name_length")
        ),
        sa.CheckConstraint(
            "points > 0 AND points <= 1000000000", name=op.f("ck_earn_rules_points_range")
        ),
        sa.CheckConstraint("revision >= 1", name=op.f("ck_earn_rules_revision_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_earn_rules")),
    )
    op.create_index(
        "uq_earn_rules_one_active",
        "earn_rules",
        ["trigger", sa.literal_column("coalesce(currency, '')")],
        unique=True,
        postgresql_where=sa.text("status = 'ACTIVE'"),
    )
    op.create_table(
        "accounts",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("contact_id", sa.Text(), nullable=False),
        sa.Column("balance", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("earned", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("adjusted", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("redeemed", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("expired", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("revision", sa.BigInteger(), server_default="1", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "last_activity_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "balance = earned + adjusted - redeemed - expired",
            name=op.f("ck_accounts_balance_adds_up"),
        ),
        sa.CheckConstraint("balance >= 0", name=op.f("ck_accounts_balance_not_negative")),
        sa.CheckConstraint(
            "earned >= 0 AND redeemed >= 0 AND expired >= 0",
            name=op.f("ck_accounts_totals_not_negative"),
        ),
        sa.CheckConstraint("id::text <> contact_id", name=op.f("ck_accounts_id_is_not_contact_id")),
        sa.CheckConstraint("revision >= 1", name=op.f("ck_accounts_revision_positive")),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.contact_id"], name=op.f("fk_accounts_contact_id_contacts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("contact_id", name=op.f("uq_accounts_contact_id")),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("account_id", sa.UUID(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=True),
        sa.Column("event_id", sa.Text(), nullable=True),
        sa.Column("order_id", sa.Text(), nullable=True),
        sa.Column("rule_id", sa.BigInteger(), nullable=True),
        sa.Column("rule_revision", sa.BigInteger(), nullable=True),
        sa.Column("actor", sa.Text(), nullable=True),
        sa.Column("balance_before", sa.BigInteger(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "(type IN ('EARN', 'REFUND') AND amount > 0) OR (type IN ('REDEEM', 'EXPIRE') AND amount < 0) OR type = 'ADJUST'",
            name=op.f("ck_ledger_entries_amount_sign"),
        ),
        sa.CheckConstraint(
            "event_type IS DISTINCT FROM 'order.completed' OR order_id IS NOT NULL",
            name=op.f("ck_ledger_entries_order_earn_has_order"),
        ),
        sa.CheckConstraint(
            "type <> 'ADJUST' OR (actor IS NOT NULL AND balance_before IS NOT NULL)",
            name=op.f("ck_ledger_entries_adjust_has_source"),
        ),
        sa.CheckConstraint(
            "type <> 'EARN' OR (event_type IS NOT NULL AND event_id IS NOT NULL AND rule_id IS NOT NULL AND rule_revision IS NOT NULL)",
            name=op.f("ck_ledger_entries_earn_has_source"),
        ),
        sa.CheckConstraint(
            "type IN ('EARN', 'ADJUST', 'REDEEM', 'REFUND', 'EXPIRE')",
            name=op.f("ck_ledger_entries_type_known"),
        ),
        sa.CheckConstraint(
            "balance_after >= 0", name=op.f("ck_ledger_entries_balance_after_not_negative")
        ),
        sa.CheckConstraint(
            "balance_before IS NULL OR balance_before + amount = balance_after",
            name=op.f("ck_ledger_entries_adjust_adds_up"),
        ),
        sa.CheckConstraint(
            "char_length(description) <= 256", name=op.f("ck_ledger_entries_description_length")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_ledger_entries_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["earn_rules.id"], name=op.f("fk_ledger_entries_rule_id_earn_rules")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entries")),
        sa.UniqueConstraint("event_id", name=op.f("uq_ledger_entries_event_id")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_ledger_entries_idempotency_key")),
        sa.UniqueConstraint("seq", name=op.f("uq_ledger_entries_seq")),
    )
    op.create_index(
        "ix_ledger_entries_account_seq", "ledger_entries", ["account_id", "seq"], unique=False
    )
    op.create_index(
        "uq_ledger_entries_one_order",
        "ledger_entries",
        ["account_id", "order_id"],
        unique=True,
        postgresql_where=sa.text("type = 'EARN' AND order_id IS NOT NULL"),
    )
    op.create_index(
        "uq_ledger_entries_one_signup",
        "ledger_entries",
        ["account_id"],
        unique=True,
        postgresql_where=sa.text("type = 'EARN' AND event_type = 'signup'"),
    )
    op.create_table(
        "adjust_requests",
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("ledger_entry_id", sa.UUID(), nullable=True),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "(status = 'applied') = (ledger_entry_id IS NOT NULL)",
            name=op.f("ck_adjust_requests_applied_has_entry"),
        ),
        sa.CheckConstraint(
            "status IN ('applied', 'rejected')", name=op.f("ck_adjust_requests_status_known")
        ),
        sa.CheckConstraint(
            "char_length(request_id) BETWEEN 1 AND 256",
            name=op.f("ck_adjust_requests_request_id_length"),
        ),
        sa.ForeignKeyConstraint(
            ["ledger_entry_id"],
            ["ledger_entries.id"],
            name=op.f("fk_adjust_requests_ledger_entry_id_ledger_entries"),
        ),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_adjust_requests")),
    )
    op.create_table(
        "processed_events",
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("contact_id", sa.Text(), nullable=False),
        sa.Column("account_id", sa.UUID(), nullable=False),
        sa.Column("order_id", sa.Text(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("points", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("ledger_entry_id", sa.UUID(), nullable=True),
        sa.Column(
            "processed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "(outcome = 'earned') = (ledger_entry_id IS NOT NULL AND points > 0)",
            name=op.f("ck_processed_events_earned_has_entry"),
        ),
        sa.CheckConstraint(
            "outcome IN ('earned', 'duplicate_order', 'already_signed_up', 'no_points', 'no_rule')",
            name=op.f("ck_processed_events_outcome_known"),
        ),
        sa.CheckConstraint(
            "char_length(event_id) BETWEEN 1 AND 256",
            name=op.f("ck_processed_events_event_id_length"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_processed_events_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["ledger_entry_id"],
            ["ledger_entries.id"],
            name=op.f("fk_processed_events_ledger_entry_id_ledger_entries"),
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_processed_events")),
    )
    for statement in INVARIANTS:
        op.execute(statement)
    op.execute(SEED_RULES)


def downgrade() -> None:
    for statement in DROP_INVARIANTS:
        op.execute(statement)
    op.drop_table("processed_events")
    op.drop_table("adjust_requests")
    op.drop_index(
        "uq_ledger_entries_one_signup",
        table_name="ledger_entries",
        postgresql_where=sa.text("type = 'EARN' AND event_type = 'signup'"),
    )
    op.drop_index(
        "uq_ledger_entries_one_order",
        table_name="ledger_entries",
        postgresql_where=sa.text("type = 'EARN' AND order_id IS NOT NULL"),
    )
    op.drop_index("ix_ledger_entries_account_seq", table_name="ledger_entries")
    op.drop_table("ledger_entries")
    op.drop_table("accounts")
    op.drop_index(
        "uq_earn_rules_one_active",
        table_name="earn_rules",
        postgresql_where=sa.text("status = 'ACTIVE'"),
    )
    op.drop_table("earn_rules")
    op.drop_index(
        "uq_dead_letters_message_id",
        table_name="dead_letters",
        postgresql_where=sa.text("message_id IS NOT NULL"),
    )
    op.drop_index("ix_dead_letters_reason_status", table_name="dead_letters")
    op.drop_table("dead_letters")
    op.drop_index(
        "uq_contacts_member_id",
        table_name="contacts",
        postgresql_where=sa.text("member_id IS NOT NULL"),
    )
    op.drop_table("contacts")


# The ledger is append-only: corrections are new entries, never edits.
# Each entry's balance_after chains from the previous entry of its account, and at
# COMMIT the account's cached balance must equal its last entry's balance_after.
# By induction the balance is the sum of the ledger, checked in O(1) per write.
INVARIANTS = [
    """
    CREATE FUNCTION loyalty_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'ledger_entries is append-only: % is not allowed', TG_OP
            USING ERRCODE = 'integrity_constraint_violation',
                  CONSTRAINT = 'ledger_entries_append_only';
    END $$
    """,
    """
    CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
        FOR EACH ROW EXECUTE FUNCTION loyalty_ledger_append_only()
    """,
    """
    CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
        FOR EACH STATEMENT EXECUTE FUNCTION loyalty_ledger_append_only()
    """,
    """
    CREATE FUNCTION loyalty_ledger_chain() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        previous bigint;
    BEGIN
        -- Serialise writers of one account, even ones that skipped the application.
        PERFORM 1 FROM accounts WHERE id = NEW.account_id FOR UPDATE;
        SELECT balance_after INTO previous FROM ledger_entries
            WHERE account_id = NEW.account_id ORDER BY seq DESC LIMIT 1;
        IF COALESCE(previous, 0) + NEW.amount <> NEW.balance_after THEN
            RAISE EXCEPTION 'ledger chain broken for account %: % + % <> %',
                NEW.account_id, COALESCE(previous, 0), NEW.amount, NEW.balance_after
                USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_entries_balance_chain';
        END IF;
        RETURN NEW;
    END $$
    """,
    """
    CREATE TRIGGER ledger_entries_balance_chain BEFORE INSERT ON ledger_entries
        FOR EACH ROW EXECUTE FUNCTION loyalty_ledger_chain()
    """,
    """
    CREATE FUNCTION loyalty_balance_matches_ledger() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        account uuid := (to_jsonb(NEW) ->> TG_ARGV[0])::uuid;
        cached bigint;
        last_after bigint;
    BEGIN
        SELECT balance INTO cached FROM accounts WHERE id = account;
        SELECT balance_after INTO last_after FROM ledger_entries
            WHERE account_id = account ORDER BY seq DESC LIMIT 1;
        IF cached IS DISTINCT FROM COALESCE(last_after, 0) THEN
            RAISE EXCEPTION 'account % balance % does not match its ledger (%)',
                account, cached, COALESCE(last_after, 0)
                USING ERRCODE = 'check_violation', CONSTRAINT = 'accounts_balance_matches_ledger';
        END IF;
        RETURN NULL;
    END $$
    """,
    """
    CREATE CONSTRAINT TRIGGER accounts_balance_matches_ledger
        AFTER INSERT OR UPDATE ON accounts DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW EXECUTE FUNCTION loyalty_balance_matches_ledger('id')
    """,
    """
    CREATE CONSTRAINT TRIGGER ledger_entries_balance_matches_account
        AFTER INSERT ON ledger_entries DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW EXECUTE FUNCTION loyalty_balance_matches_ledger('account_id')
    """,
    """
    CREATE FUNCTION loyalty_revision_step() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.revision <> OLD.revision + 1 THEN
            RAISE EXCEPTION '% revision must go from % to %, not %',
                TG_TABLE_NAME, OLD.revision, OLD.revision + 1, NEW.revision
                USING ERRCODE = 'check_violation', CONSTRAINT = TG_TABLE_NAME || '_revision_step';
        END IF;
        RETURN NEW;
    END $$
    """,
    """
    CREATE TRIGGER accounts_revision_step BEFORE UPDATE ON accounts
        FOR EACH ROW EXECUTE FUNCTION loyalty_revision_step()
    """,
    """
    CREATE TRIGGER earn_rules_revision_step BEFORE UPDATE ON earn_rules
        FOR EACH ROW EXECUTE FUNCTION loyalty_revision_step()
    """,
    "CREATE INDEX ix_dead_letters_status_id ON dead_letters (status, id)",
]

DROP_INVARIANTS = [
    "DROP TRIGGER IF EXISTS ledger_entries_append_only ON ledger_entries",
    "DROP TRIGGER IF EXISTS ledger_entries_no_truncate ON ledger_entries",
    "DROP TRIGGER IF EXISTS ledger_entries_balance_chain ON ledger_entries",
    "DROP TRIGGER IF EXISTS ledger_entries_balance_matches_account ON ledger_entries",
    "DROP TRIGGER IF EXISTS accounts_balance_matches_ledger ON accounts",
    "DROP TRIGGER IF EXISTS accounts_revision_step ON accounts",
    "DROP TRIGGER IF EXISTS earn_rules_revision_step ON earn_rules",
    "DROP FUNCTION IF EXISTS loyalty_ledger_append_only()",
    "DROP FUNCTION IF EXISTS loyalty_ledger_chain()",
    "DROP FUNCTION IF EXISTS loyalty_balance_matches_ledger()",
    "DROP FUNCTION IF EXISTS loyalty_revision_step()",
]

SEED_RULES = """
INSERT INTO earn_rules (name, trigger, kind, points, money_amount, currency, status) VALUES
    ('Signup bonus', 'signup', 'fixed', 100, NULL, NULL, 'ACTIVE'),
    ('Points per order total', 'order.completed', 'conversion', 1, 1.00, NULL, 'ACTIVE')
"""
