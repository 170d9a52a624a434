"""Accounts: a write may add several entries at once, so the revision moves by their number.

The batch path credits an account once per batch, with one UPDATE for all of the
batch's entries for it. Its revision still counts ledger entries (one per change,
as the single-event path does), so the trigger now requires the revision to go
up, by any amount; `loyalty verify` checks revision = 1 + the number of entries.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE FUNCTION loyalty_revision_increases() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.revision <= OLD.revision THEN
                RAISE EXCEPTION '% revision must go up from %, not to %',
                    TG_TABLE_NAME, OLD.revision, NEW.revision
                    USING ERRCODE = 'check_violation',
                          CONSTRAINT = TG_TABLE_NAME || '_revision_step';
            END IF;
            RETURN NEW;
        END $$
    """)
    op.execute("DROP TRIGGER accounts_revision_step ON accounts")
    op.execute("""
        CREATE TRIGGER accounts_revision_step BEFORE UPDATE ON accounts
            FOR EACH ROW EXECUTE FUNCTION loyalty_revision_increases()
    """)


def downgrade() -> None:
    op.execute("DROP TRIGGER accounts_revision_step ON accounts")
    op.execute("""
        CREATE TRIGGER accounts_revision_step BEFORE UPDATE ON accounts
            FOR EACH ROW EXECUTE FUNCTION loyalty_revision_step()
    """)
    op.execute("DROP FUNCTION loyalty_revision_increases()")
