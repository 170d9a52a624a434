"""Ledger: an event's entry is unique by its event_id alone, not also by its idempotency key.

An EARN entry's idempotency_key is always 'event:' || event_id, and event_id is
unique, so the unique B-tree on idempotency_key indexed the same value a second
time, at random places: a batch of 500 entries dirtied 500 more random index pages,
which with millions of entries are mostly not in memory. Now:

- a CHECK ties the two: an entry with an event_id has exactly that key, and an
  entry without one (ADJUST) may not use the 'event:' prefix;
- the unique index on idempotency_key covers the entries without an event_id.

So two entries still never share an idempotency key.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

CHECK = ("(event_id IS NULL AND NOT starts_with(idempotency_key, 'event:'))"
         " OR (event_id IS NOT NULL AND idempotency_key = 'event:' || event_id)")


def upgrade() -> None:
    op.execute(f"ALTER TABLE ledger_entries ADD CONSTRAINT ck_ledger_entries_event_key CHECK ({CHECK})")
    op.execute("ALTER TABLE ledger_entries DROP CONSTRAINT uq_ledger_entries_idempotency_key")
    op.execute("CREATE UNIQUE INDEX uq_ledger_entries_idempotency_key ON ledger_entries"
               " (idempotency_key) WHERE event_id IS NULL")


def downgrade() -> None:
    op.execute("DROP INDEX uq_ledger_entries_idempotency_key")
    op.execute("ALTER TABLE ledger_entries ADD CONSTRAINT uq_ledger_entries_idempotency_key"
               " UNIQUE (idempotency_key)")
    op.execute("ALTER TABLE ledger_entries DROP CONSTRAINT ck_ledger_entries_event_key")
