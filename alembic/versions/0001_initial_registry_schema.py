"""Initial registry schema, plus full-text search (SQLite FTS5 with triggers, PostgreSQL GIN).

Revision ID: 0001
Revises:
Create Date: 2026-11-23 11:33:58.484031
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op


revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('guild_settings',
    sa.Column('guild_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('default_strength', sa.Float(), nullable=False),
    sa.Column('default_steps', sa.SmallInteger(), nullable=False),
    sa.Column('allow_nsfw_outside_nsfw_channels', sa.Boolean(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('guild_id', name=op.f('pk_guild_settings'))
    )
    op.create_table('users',
    sa.Column('id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('display_name', sa.String(length=100), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users'))
    )
    op.create_table('styles',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=32).with_variant(sa.String(length=32, collation='C'), 'postgresql'), nullable=False),
    sa.Column('owner_id', sa.BigInteger(), nullable=False),
    sa.Column('guild_id', sa.BigInteger(), nullable=True),
    sa.Column('visibility', sa.String(length=8), nullable=False),
    sa.Column('description', sa.String(length=300), nullable=False),
    sa.Column('tags', sa.String(length=200), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('head_number', sa.Integer(), nullable=False),
    sa.Column('version', sa.SmallInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('use_count', sa.Integer(), nullable=False),
    sa.Column('favourite_count', sa.Integer(), nullable=False),
    sa.Column('trending_score', sa.Float(), nullable=True),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("visibility != 'guild' OR guild_id IS NOT NULL", name=op.f('ck_styles_guild_style_has_guild')),
    sa.CheckConstraint("visibility IN ('public', 'guild', 'private')", name=op.f('ck_styles_visibility')),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_styles_owner_id_users')),
    sa.ForeignKeyConstraint(['parent_id'], ['styles.id'], name=op.f('fk_styles_parent_id_styles')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_styles')),
    sa.UniqueConstraint('name', name=op.f('uq_styles_name'))
    )
    with op.batch_alter_table('styles', schema=None) as batch_op:
        batch_op.create_index('ix_styles_favourites', ['favourite_count', 'id'], unique=False)
        batch_op.create_index('ix_styles_owner', ['owner_id', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_styles_parent_id'), ['parent_id'], unique=False)
        batch_op.create_index('ix_styles_popular', ['use_count', 'id'], unique=False)
        batch_op.create_index('ix_styles_trending', ['trending_score', 'id'], unique=False)

    op.create_table('favourites',
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('style_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['style_id'], ['styles.id'], name=op.f('fk_favourites_style_id_styles'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'style_id', name=op.f('pk_favourites'))
    )
    with op.batch_alter_table('favourites', schema=None) as batch_op:
        batch_op.create_index('ix_favourites_style', ['style_id'], unique=False)

    op.create_table('guild_hides',
    sa.Column('guild_id', sa.BigInteger(), nullable=False),
    sa.Column('style_id', sa.Integer(), nullable=False),
    sa.Column('hidden_by', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['style_id'], ['styles.id'], name=op.f('fk_guild_hides_style_id_styles'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('guild_id', 'style_id', name=op.f('pk_guild_hides'))
    )
    op.create_table('revisions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('style_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=21), nullable=False),
    sa.Column('version', sa.SmallInteger(), nullable=False),
    sa.Column('levels', sa.LargeBinary(length=20), nullable=False),
    sa.Column('author_id', sa.BigInteger(), nullable=False),
    sa.Column('note', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('preview_webp', sa.LargeBinary(), nullable=True),
    sa.CheckConstraint('number >= 1', name=op.f('ck_revisions_number_positive')),
    sa.ForeignKeyConstraint(['author_id'], ['users.id'], name=op.f('fk_revisions_author_id_users')),
    sa.ForeignKeyConstraint(['style_id'], ['styles.id'], name=op.f('fk_revisions_style_id_styles'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_revisions')),
    sa.UniqueConstraint('style_id', 'number', name=op.f('uq_revisions_style_id'))
    )
    with op.batch_alter_table('revisions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_revisions_code'), ['code'], unique=False)

    op.create_table('style_tags',
    sa.Column('style_id', sa.Integer(), nullable=False),
    sa.Column('tag', sa.String(length=24), nullable=False),
    sa.ForeignKeyConstraint(['style_id'], ['styles.id'], name=op.f('fk_style_tags_style_id_styles'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('style_id', 'tag', name=op.f('pk_style_tags'))
    )
    with op.batch_alter_table('style_tags', schema=None) as batch_op:
        batch_op.create_index('ix_style_tags_tag', ['tag', 'style_id'], unique=False)

    op.create_table('usages',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.String(length=32), nullable=False),
    sa.Column('revision_id', sa.Integer(), nullable=True),
    sa.Column('style_id', sa.Integer(), nullable=True),
    sa.Column('code', sa.String(length=21), nullable=True),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('guild_id', sa.BigInteger(), nullable=True),
    sa.Column('channel_id', sa.BigInteger(), nullable=True),
    sa.Column('prompt', sa.Text(), nullable=False),
    sa.Column('negative_prompt', sa.Text(), nullable=False),
    sa.Column('seed', sa.BigInteger(), nullable=False),
    sa.Column('steps', sa.SmallInteger(), nullable=False),
    sa.Column('guidance_scale', sa.Float(), nullable=False),
    sa.Column('strength', sa.Float(), nullable=False),
    sa.Column('width', sa.SmallInteger(), nullable=False),
    sa.Column('height', sa.SmallInteger(), nullable=False),
    sa.Column('model_version', sa.SmallInteger(), nullable=False),
    sa.Column('count', sa.SmallInteger(), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('queued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('message_link', sa.String(length=200), nullable=True),
    sa.CheckConstraint("status IN ('queued', 'running', 'done', 'failed', 'cancelled')", name=op.f('ck_usages_status')),
    sa.ForeignKeyConstraint(['revision_id'], ['revisions.id'], name=op.f('fk_usages_revision_id_revisions')),
    sa.ForeignKeyConstraint(['style_id'], ['styles.id'], name=op.f('fk_usages_style_id_styles')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_usages')),
    sa.UniqueConstraint('job_id', name=op.f('uq_usages_job_id'))
    )
    with op.batch_alter_table('usages', schema=None) as batch_op:
        batch_op.create_index('ix_usages_style_queued', ['style_id', 'queued_at'], unique=False)
        batch_op.create_index('ix_usages_unfinished', ['status'], unique=False, sqlite_where=sa.text("status IN ('queued', 'running')"), postgresql_where=sa.text("status IN ('queued', 'running')"))
        batch_op.create_index('ix_usages_user_queued', ['user_id', 'queued_at'], unique=False)

    _create_search(op.get_bind().dialect.name)


# External-content FTS5 table over styles(name, description, tags), kept in step by triggers. The
# update trigger fires only on the searched columns, so counter updates never touch the index.
_SQLITE_SEARCH = [
    """CREATE VIRTUAL TABLE style_fts USING fts5(
        name, description, tags, content='styles', content_rowid='id', tokenize='unicode61 remove_diacritics 2')""",
    """CREATE TRIGGER style_fts_insert AFTER INSERT ON styles BEGIN
        INSERT INTO style_fts(rowid, name, description, tags) VALUES (new.id, new.name, new.description, new.tags);
    END""",
    """CREATE TRIGGER style_fts_delete AFTER DELETE ON styles BEGIN
        INSERT INTO style_fts(style_fts, rowid, name, description, tags)
        VALUES ('delete', old.id, old.name, old.description, old.tags);
    END""",
    """CREATE TRIGGER style_fts_update AFTER UPDATE OF name, description, tags ON styles BEGIN
        INSERT INTO style_fts(style_fts, rowid, name, description, tags)
        VALUES ('delete', old.id, old.name, old.description, old.tags);
        INSERT INTO style_fts(rowid, name, description, tags) VALUES (new.id, new.name, new.description, new.tags);
    END""",
]
# PostgreSQL: a stored generated tsvector column (cheap to test per row, with real statistics for the
# planner) and a GIN index on it; registry/browse.py searches `styles.search_tsv`.
_POSTGRES_SEARCH = [
    """ALTER TABLE styles ADD COLUMN search_tsv tsvector GENERATED ALWAYS AS
        (to_tsvector('simple'::regconfig, name || ' ' || description || ' ' || tags)) STORED""",
    "CREATE INDEX ix_styles_search_tsv ON styles USING gin (search_tsv)",
]


def _create_search(dialect: str) -> None:
    for statement in _SQLITE_SEARCH if dialect == "sqlite" else _POSTGRES_SEARCH:
        op.execute(statement)


def _drop_search(dialect: str) -> None:
    if dialect == "sqlite":
        for trigger in ("style_fts_insert", "style_fts_delete", "style_fts_update"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS style_fts")
    else:
        op.execute("DROP INDEX IF EXISTS ix_styles_search_tsv")
        op.execute("ALTER TABLE styles DROP COLUMN IF EXISTS search_tsv")


def downgrade() -> None:
    _drop_search(op.get_bind().dialect.name)
    with op.batch_alter_table('usages', schema=None) as batch_op:
        batch_op.drop_index('ix_usages_user_queued')
        batch_op.drop_index('ix_usages_unfinished', sqlite_where=sa.text("status IN ('queued', 'running')"), postgresql_where=sa.text("status IN ('queued', 'running')"))
        batch_op.drop_index('ix_usages_style_queued')

    op.drop_table('usages')
    with op.batch_alter_table('style_tags', schema=None) as batch_op:
        batch_op.drop_index('ix_style_tags_tag')

    op.drop_table('style_tags')
    with op.batch_alter_table('revisions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_revisions_code'))

    op.drop_table('revisions')
    op.drop_table('guild_hides')
    with op.batch_alter_table('favourites', schema=None) as batch_op:
        batch_op.drop_index('ix_favourites_style')

    op.drop_table('favourites')
    with op.batch_alter_table('styles', schema=None) as batch_op:
        batch_op.drop_index('ix_styles_trending')
        batch_op.drop_index('ix_styles_popular')
        batch_op.drop_index(batch_op.f('ix_styles_parent_id'))
        batch_op.drop_index('ix_styles_owner')
        batch_op.drop_index('ix_styles_favourites')

    op.drop_table('styles')
    op.drop_table('users')
    op.drop_table('guild_settings')
