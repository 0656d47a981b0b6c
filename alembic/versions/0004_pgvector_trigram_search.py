"""Similar styles and name suggestions inside PostgreSQL: pgvector (HNSW) and pg_trgm (GIN).

PostgreSQL:
- the extensions `vector` (pgvector) and `pg_trgm` are created if missing. Where the server lacks one,
  or this database user may not create it, the migration stops with `MissingExtensionError`, whose
  message says what to install or whom to ask; the registry does not run on PostgreSQL without them
  (see docs/registry.md, "PostgreSQL extensions");
- `styles.latent vector(20)`: the head revision's 20 levels, filled from `revisions` here and kept by
  the trigger `revisions_head_latent` (a revision inserted as its style's head sets it), with the HNSW
  index `ix_styles_latent_hnsw` (L2);
- `ix_styles_name_trgm`: a trigram GIN index on `styles.name` for "did you mean" suggestions.

Both backends: `ix_styles_version` on (version, id), which the planner uses instead of the HNSW index
when an encoder version is rare, so similar stays exact and fast for it.

SQLite keeps its embedded paths (an exact in-memory index for similar, difflib for suggestions).
Building the HNSW index reads every style once (minutes at 1M styles; the bot migrates before it serves).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op
from registry.errors import MissingExtensionError

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EXTENSIONS = {
    "vector": "pgvector (similar styles): install the server package (Debian/Ubuntu: postgresql-NN-pgvector; "
    "the compose file's image pgvector/pgvector:pg17 has it; managed services list it as `vector`)",
    "pg_trgm": "pg_trgm (name suggestions), part of PostgreSQL's contrib modules (Debian/Ubuntu: postgresql-contrib)",
}

_POSTGRES_UP = [
    "ALTER TABLE styles ADD COLUMN latent vector(20)",
    # The 20 level bytes as a vector; IMMUTABLE so the trigger and the backfill can use it freely.
    """CREATE FUNCTION registry_levels_vector(levels bytea) RETURNS vector
        LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS
        $$ SELECT array_agg(get_byte(levels, i) ORDER BY i)::real[]::vector FROM generate_series(0, 19) AS i $$""",
    # A revision is its style's head when its number is the style's head_number: `create_style` writes the
    # style first, `add_revision` moves head_number before inserting; both then insert the revision.
    """CREATE FUNCTION registry_revision_sets_head_latent() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE styles SET latent = registry_levels_vector(NEW.levels)
            WHERE id = NEW.style_id AND head_number = NEW.number;
            RETURN NULL;
        END $$""",
    """CREATE TRIGGER revisions_head_latent AFTER INSERT ON revisions
        FOR EACH ROW EXECUTE FUNCTION registry_revision_sets_head_latent()""",
    """UPDATE styles SET latent = registry_levels_vector(r.levels)
        FROM revisions r WHERE r.style_id = styles.id AND r.number = styles.head_number""",
    "CREATE INDEX ix_styles_latent_hnsw ON styles USING hnsw (latent vector_l2_ops)",
    "CREATE INDEX ix_styles_name_trgm ON styles USING gin (name gin_trgm_ops)",
]
_POSTGRES_DOWN = [
    "DROP INDEX IF EXISTS ix_styles_name_trgm",
    "DROP INDEX IF EXISTS ix_styles_latent_hnsw",
    "DROP TRIGGER IF EXISTS revisions_head_latent ON revisions",
    "DROP FUNCTION IF EXISTS registry_revision_sets_head_latent()",
    "DROP FUNCTION IF EXISTS registry_levels_vector(bytea)",
    "ALTER TABLE styles DROP COLUMN IF EXISTS latent",
]


def upgrade() -> None:
    with op.batch_alter_table("styles", schema=None) as batch_op:
        batch_op.create_index("ix_styles_version", ["version", "id"], unique=False)
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in EXTENSIONS:
        _create_extension(name)
    for statement in _POSTGRES_UP:
        op.execute(statement)


def _create_extension(name: str) -> None:
    """`CREATE EXTENSION IF NOT EXISTS`, or a `MissingExtensionError` saying what to do."""
    bind = op.get_bind()
    installed = bind.scalar(sa.text("SELECT 1 FROM pg_extension WHERE extname = :name"), {"name": name})
    if installed:
        return
    database = bind.scalar(sa.text("SELECT current_database()"))
    available = bind.scalar(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = :name"), {"name": name})
    if not available:
        raise MissingExtensionError(
            f"The PostgreSQL server has no `{name}` extension, which the registry needs: {EXTENSIONS[name]}. "
            f"Install it on the database server, then start again (the migration creates it in `{database}`)."
        )
    try:
        with bind.begin_nested():
            bind.execute(sa.text(f'CREATE EXTENSION IF NOT EXISTS "{name}"'))
    except sa.exc.DBAPIError as exc:
        raise MissingExtensionError(
            f"This database user may not create the `{name}` extension in `{database}` ({_first_line(exc)}). "
            f'Have a superuser (or the database owner on PostgreSQL 13+) run `CREATE EXTENSION "{name}";` in '
            f"`{database}` once, then start again."
        ) from None


def _first_line(exc: Exception) -> str:
    text = str(getattr(exc, "orig", exc)).strip().splitlines()
    return text[0].rstrip(".") if text else type(exc).__name__


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in _POSTGRES_DOWN:
            op.execute(statement)
        # The extensions stay: other databases' objects or an operator's may use them.
    with op.batch_alter_table("styles", schema=None) as batch_op:
        batch_op.drop_index("ix_styles_version")
