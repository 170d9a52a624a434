"""Ledger checks once per INSERT statement instead of once per row.

A batch writes hundreds of entries in one statement. The row-level chain trigger and
the deferred row-level balance trigger ran two PL/pgSQL calls and four lookups per
entry. One statement-level trigger (with the statement's new rows as a transition
table) now does the same checks with two set-based queries:

- it locks the accounts of the new entries, in id order;
- each new entry's balance_after must equal the previous entry's plus its amount;
- each of those accounts' balance must already equal its last entry's balance_after,
  so the account row is updated first and its entries inserted after. The deferred
  trigger on accounts still checks, at commit, every account that was updated.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

CHECKS = """
CREATE FUNCTION loyalty_ledger_statement_checks() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    -- Serialise writers of these accounts, even ones that skipped the application.
    PERFORM 1 FROM accounts WHERE id IN (SELECT account_id FROM new_entries)
        ORDER BY id FOR UPDATE;
    SELECT n.account_id, n.amount, n.balance_after, COALESCE(p.balance_after, 0) AS previous
        INTO bad
        FROM new_entries n
        LEFT JOIN LATERAL (
            SELECT e.balance_after FROM ledger_entries e
            WHERE e.account_id = n.account_id AND e.seq < n.seq
            ORDER BY e.seq DESC LIMIT 1
        ) p ON true
        WHERE COALESCE(p.balance_after, 0) + n.amount <> n.balance_after
        LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger chain broken for account %: % + % <> %',
            bad.account_id, bad.previous, bad.amount, bad.balance_after
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_entries_balance_chain';
    END IF;
    SELECT a.id, a.balance, l.balance_after INTO bad
        FROM accounts a
        JOIN LATERAL (
            SELECT e.balance_after FROM ledger_entries e
            WHERE e.account_id = a.id ORDER BY e.seq DESC LIMIT 1
        ) l ON true
        WHERE a.id IN (SELECT account_id FROM new_entries) AND a.balance <> l.balance_after
        LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'account % balance % does not match its ledger (%)',
            bad.id, bad.balance, bad.balance_after
            USING ERRCODE = 'check_violation', CONSTRAINT = 'accounts_balance_matches_ledger';
    END IF;
    RETURN NULL;
END $$
"""


def upgrade() -> None:
    op.execute("DROP TRIGGER ledger_entries_balance_chain ON ledger_entries")
    op.execute("DROP TRIGGER ledger_entries_balance_matches_account ON ledger_entries")
    op.execute(CHECKS)
    op.execute("""
        CREATE TRIGGER ledger_entries_checked AFTER INSERT ON ledger_entries
            REFERENCING NEW TABLE AS new_entries
            FOR EACH STATEMENT EXECUTE FUNCTION loyalty_ledger_statement_checks()
    """)


def downgrade() -> None:
    op.execute("DROP TRIGGER ledger_entries_checked ON ledger_entries")
    op.execute("DROP FUNCTION loyalty_ledger_statement_checks()")
    op.execute("""
        CREATE TRIGGER ledger_entries_balance_chain BEFORE INSERT ON ledger_entries
            FOR EACH ROW EXECUTE FUNCTION loyalty_ledger_chain()
    """)
    op.execute("""
        CREATE CONSTRAINT TRIGGER ledger_entries_balance_matches_account
            AFTER INSERT ON ledger_entries DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW EXECUTE FUNCTION loyalty_balance_matches_ledger('account_id')
    """)
