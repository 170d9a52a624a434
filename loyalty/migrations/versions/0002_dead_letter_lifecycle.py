"""Dead-letter lifecycle (replayed/discarded times) and the crash counter for poison messages.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("dead_letters", sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("dead_letters", sa.Column("discarded_at", sa.DateTime(timezone=True), nullable=True))
    op.create_check_constraint(
        op.f("ck_dead_letters_discard_is_explained"),
        "dead_letters",
        "(status = 'discarded') = (discarded_at IS NOT NULL AND discarded_by IS NOT NULL"
        " AND discard_reason IS NOT NULL)",
    )
    op.create_check_constraint(
        op.f("ck_dead_letters_replay_has_time"),
        "dead_letters",
        "status <> 'replayed' OR replayed_at IS NOT NULL",
    )
    op.create_table(
        "message_crashes",
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("task_name", sa.Text(), nullable=True),
        sa.Column("crashes", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("first_crashed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("last_crashed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("crashes >= 1", name=op.f("ck_message_crashes_crashes_positive")),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_message_crashes")),
    )


def downgrade() -> None:
    op.drop_table("message_crashes")
    op.drop_constraint(op.f("ck_dead_letters_replay_has_time"), "dead_letters", type_="check")
    op.drop_constraint(op.f("ck_dead_letters_discard_is_explained"), "dead_letters", type_="check")
    op.drop_column("dead_letters", "discarded_at")
    op.drop_column("dead_letters", "replayed_at")
