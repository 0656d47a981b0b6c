"""usages: an index for a style's recent uses in one guild (style_history shows only those).

`style_history` lists a style's recent uses made in the asking guild. With only
(style_id, queued_at), a popular style asked about from a guild that rarely used it scans every
use of the style; (style_id, guild_id, queued_at, id) reads exactly the rows it returns, already in
order. Building it reads the usages table once (seconds at 5M rows; the bot migrates before it
serves).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 08:01:06.234664
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("usages", schema=None) as batch_op:
        batch_op.create_index("ix_usages_style_guild_queued", ["style_id", "guild_id", "queued_at", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("usages", schema=None) as batch_op:
        batch_op.drop_index("ix_usages_style_guild_queued")
