"""Defects of issue 8: point ceilings in the database, and what a re-sent order changed.

- An EARN entry is at most 9,999,999 points (Wix's earnPoints limit) and a balance at
  most 999,999,999, on accounts and on every entry's balance_after: one ceiling for
  every way points arrive, so no code path can build a balance the adjustments refuse.
- processed_events keeps each event's normalised payload (for `loyalty events list`)
  and, for an outcome that needs one, a detail: `duplicate_order_changed`, an order
  re-sent with another total or currency, records both.

Revision ID: 0006_defects
Revises: 0005
"""

from alembic import op

revision = "0006_defects"
down_revision = "0005"
branch_labels = None
depends_on = None

OUTCOMES_BEFORE = "('earned', 'duplicate_order', 'already_signed_up', 'no_points', 'no_rule')"
OUTCOMES = ("('earned', 'duplicate_order', 'duplicate_order_changed', 'already_signed_up',"
            " 'no_points', 'no_rule')")


def upgrade() -> None:
    op.execute("ALTER TABLE ledger_entries ADD CONSTRAINT ck_ledger_entries_earn_at_most_max"
               " CHECK (type <> 'EARN' OR amount <= 9999999)")
    op.execute("ALTER TABLE ledger_entries ADD CONSTRAINT ck_ledger_entries_balance_after_at_most_max"
               " CHECK (balance_after <= 999999999)")
    op.execute("ALTER TABLE accounts ADD CONSTRAINT ck_accounts_balance_at_most_max"
               " CHECK (balance <= 999999999)")
    op.execute("ALTER TABLE processed_events ADD COLUMN payload jsonb")
    op.execute("ALTER TABLE processed_events ADD COLUMN detail jsonb")
    op.execute("ALTER TABLE processed_events DROP CONSTRAINT ck_processed_events_outcome_known")
    op.execute("ALTER TABLE processed_events ADD CONSTRAINT ck_processed_events_outcome_known"
               f" CHECK (outcome IN {OUTCOMES})")


def downgrade() -> None:
    op.execute("UPDATE processed_events SET outcome = 'duplicate_order'"
               " WHERE outcome = 'duplicate_order_changed'")
    op.execute("ALTER TABLE processed_events DROP CONSTRAINT ck_processed_events_outcome_known")
    op.execute("ALTER TABLE processed_events ADD CONSTRAINT ck_processed_events_outcome_known"
               f" CHECK (outcome IN {OUTCOMES_BEFORE})")
    op.execute("ALTER TABLE processed_events DROP COLUMN detail")
    op.execute("ALTER TABLE processed_events DROP COLUMN payload")
    op.execute("ALTER TABLE accounts DROP CONSTRAINT ck_accounts_balance_at_most_max")
    op.execute("ALTER TABLE ledger_entries DROP CONSTRAINT ck_ledger_entries_balance_after_at_most_max")
    op.execute("ALTER TABLE ledger_entries DROP CONSTRAINT ck_ledger_entries_earn_at_most_max")
