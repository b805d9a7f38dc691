"""The SQLite layout of the experience store, and its migrations.

Design decisions
- Plain SQL in ONE ``BEGIN IMMEDIATE`` transaction that re-reads ``meta.schema_version`` first: several
  processes opening the same old (or new) file at once migrate it exactly once; the others wait on the
  write lock (busy timeout) and then find it done.
- Version 2 keeps each episode's embedding in SQLite (``vector``: float32 bytes) with ``vseq``, a number
  that grows in commit order (``max + 1`` under the write lock). The Chroma index can then be rebuilt
  without re-embedding, verified vector by vector, and searched exactly by processes that do not own it
  (see :mod:`memory.keeper`); ``vseq`` lets them read only what changed since their last look.
- Version 3 adds ``episodes.purpose`` (train | eval) as a column, migrated from the metadata string.
- A newer file than this code knows is refused (:class:`SchemaError`), never downgraded.

    python -c "from memory.store import Store; print(Store('.selfevolve/experience.db').count(unindexed_only=True))"
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA_VERSION = 3

_V1 = [
    'CREATE TABLE IF NOT EXISTS "episodes" ("id" TEXT PRIMARY KEY, "run_id" TEXT, "env" TEXT NOT NULL, '
    '"task_id" TEXT, "split" TEXT, "question" TEXT, "model_version" TEXT, "feedback_source" TEXT, '
    '"success" INTEGER, "first_success" INTEGER, "recovered" INTEGER, "n_attempts" INTEGER, "tokens" INTEGER, '
    '"created_at" REAL, "seconds" REAL, "error" TEXT, "episode_json" TEXT NOT NULL, "indexed" INTEGER DEFAULT 0, '
    '"updated_at" REAL)',
    'CREATE TABLE IF NOT EXISTS "attempts" ("id" TEXT PRIMARY KEY, "episode_id" TEXT REFERENCES "episodes"("id"), '
    '"idx" INTEGER, "success" INTEGER, "reward" REAL, "answer" TEXT, "feedback_message" TEXT, '
    '"has_reflection" INTEGER, "model_version" TEXT, "tokens" INTEGER, "attempt_json" TEXT)',
    'CREATE TABLE IF NOT EXISTS "runs" ("id" TEXT PRIMARY KEY, "kind" TEXT, "env" TEXT, "model_version" TEXT, '
    '"started_at" REAL, "finished_at" REAL, "run_json" TEXT)',
    'CREATE TABLE IF NOT EXISTS "model_versions" ("id" TEXT PRIMARY KEY, "status" TEXT, "parent" TEXT, '
    '"method" TEXT, "created_at" REAL, "status_changed_at" REAL, "version_json" TEXT)',
    'CREATE INDEX IF NOT EXISTS "idx_episodes_env_created_at" ON "episodes" ("env", "created_at")',
    'CREATE INDEX IF NOT EXISTS "idx_episodes_env_indexed" ON "episodes" ("env", "indexed")',
    'CREATE INDEX IF NOT EXISTS "idx_episodes_created_at" ON "episodes" ("created_at")',
    'CREATE INDEX IF NOT EXISTS "idx_episodes_model_version" ON "episodes" ("model_version")',
    'CREATE INDEX IF NOT EXISTS "idx_episodes_run_id" ON "episodes" ("run_id")',
    'CREATE INDEX IF NOT EXISTS "idx_attempts_episode_id_idx" ON "attempts" ("episode_id", "idx")',
]
_V2 = [
    'ALTER TABLE "episodes" ADD COLUMN "vector" BLOB',
    'ALTER TABLE "episodes" ADD COLUMN "vseq" INTEGER',
    'CREATE INDEX IF NOT EXISTS "idx_episodes_vseq" ON "episodes" ("vseq")',
    'CREATE INDEX IF NOT EXISTS "idx_episodes_no_vector" ON "episodes" ("env") WHERE "vector" IS NULL',
]
# Version 3: ``episodes.purpose`` (train | eval), filled from the ``metadata.purpose`` string earlier episodes carried.
_V3 = [
    """ALTER TABLE "episodes" ADD COLUMN "purpose" TEXT NOT NULL DEFAULT 'train'""",
    """UPDATE "episodes" SET "purpose" = 'eval' WHERE json_extract("episode_json", '$.metadata.purpose') = 'eval'""",
]
STEPS = {1: _V1, 2: _V2, 3: _V3}


class SchemaError(RuntimeError):
    """The database file was written by a newer selfevolve."""


def _version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: sqlite3.Connection, path: Path) -> int:
    """Bring the file at ``path`` (open as ``conn``, autocommit mode) to :data:`SCHEMA_VERSION`."""
    conn.execute('CREATE TABLE IF NOT EXISTS "meta" ("key" TEXT PRIMARY KEY, "value" TEXT)')
    if _version(conn) == SCHEMA_VERSION:  # the common case: no write lock taken
        return SCHEMA_VERSION
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _version(conn)
        if version > SCHEMA_VERSION:
            raise SchemaError(
                f"{path} has schema version {version}, this selfevolve knows {SCHEMA_VERSION}: "
                "upgrade selfevolve (pip install -U selfevolve) or use another workspace."
            )
        for step in range(version + 1, SCHEMA_VERSION + 1):
            for sql in STEPS[step]:
                conn.execute(sql)
        conn.execute(
            "INSERT INTO meta(key, value) VALUES ('schema_version', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [str(SCHEMA_VERSION)],
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return SCHEMA_VERSION
