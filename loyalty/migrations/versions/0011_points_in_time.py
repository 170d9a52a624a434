"""Points in time: program settings.

- `program`: one row (`id = 1`), its bounds CHECKed as `loyalty.program` validates
  them, its revision moved by exactly one per change (`loyalty_revision_step`, as rules
  and rewards), so `loyalty program set --revision` cannot lose a concurrent change.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
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


def downgrade() -> None:
    op.drop_table("program")
