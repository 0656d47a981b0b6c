"""usages.delivered_at: when the bot posted a job's outcome, so restart recovery can post the rest.

A job can finish while no bot follows it (the bot restarted, or crashed between the worker's `done` and
its post). Such a row is `done` or `failed` with `delivered_at` NULL; recovery posts it. Rows finished
before this migration count as delivered (their bots posted them, or their users have moved on long
since), so upgrading never re-posts old results. The partial index holds only the undelivered rows.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNDELIVERED = sa.text("delivered_at IS NULL AND status IN ('done', 'failed')")


def upgrade() -> None:
    with op.batch_alter_table("usages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE usages SET delivered_at = finished_at WHERE status IN ('done', 'failed', 'cancelled')")
    op.create_index(
        "ix_usages_undelivered",
        "usages",
        ["finished_at"],
        unique=False,
        sqlite_where=UNDELIVERED,
        postgresql_where=UNDELIVERED,
    )


def downgrade() -> None:
    op.drop_index("ix_usages_undelivered", table_name="usages")
    with op.batch_alter_table("usages", schema=None) as batch_op:
        batch_op.drop_column("delivered_at")
