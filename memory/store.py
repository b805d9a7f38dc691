"""SQLite, the source of truth of the experience library (through sqlite-utils).

Design decisions
- WAL mode and a 30 s busy timeout: one writer and many readers at a time, across threads and processes.
- An episode and its attempts are written in ONE ``BEGIN IMMEDIATE`` transaction with plain SQL
  (sqlite-utils' write helpers commit on their own, which would split it). A kill -9 at any point leaves
  either the old rows or the new ones, never half an episode.
- Stable ids: the episode row is keyed by ``episode.id`` and its attempts by ``"<episode id>:<index>"``,
  so recording the same episode again replaces it (no duplicates).
- ``episodes.indexed`` is 0 until the vector index has the episode: the Chroma index can be *behind*
  SQLite (crash between the two writes, index unreachable) and :mod:`memory.library` repairs it.
- ``meta.schema_version`` guards the layout; an older file is migrated, a newer one refused
  (:mod:`memory.schema`). Each episode's embedding is kept beside it (``vector``, float32 bytes, and
  ``vseq``, a number that grows in commit order), so the index is rebuilt without re-embedding. Version 3
  adds ``episodes.purpose`` (train | eval, :attr:`memory.records.Episode.purpose`), filled from the
  ``metadata.purpose`` string earlier versions stored.

    python -c "from memory.store import Store; print(Store('.selfevolve/experience.db').count())"
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils

from memory.records import Episode, ModelVersion, Run
from memory.schema import SCHEMA_VERSION, SchemaError, migrate
from memory.vectors import VectorColumns, _blob

FILTER_KEYS = ("env", "success", "first_success", "model_version", "run_id", "since", "purpose")


def where_clause(
    env: str | None = None,
    success: bool | None = None,
    first_success: bool | None = None,
    model_version: str | None = None,
    run_id: str | None = None,
    since: float | None = None,
    feedback_source: str | None = None,
    purpose: str | None = None,
) -> tuple[str, list[Any]]:
    """SQL ``WHERE`` text (possibly empty) and its parameters for the episode filters."""
    parts: list[str] = []
    params: list[Any] = []
    for column, value in (("env", env), ("model_version", model_version), ("run_id", run_id),
                          ("feedback_source", feedback_source), ("purpose", purpose)):
        if value is not None:
            parts.append(f"{column} = ?")
            params.append(value)
    for column, flag in (("success", success), ("first_success", first_success)):
        if flag is not None:
            parts.append(f"{column} = ?")
            params.append(int(flag))
    if since is not None:
        parts.append("created_at >= ?")
        params.append(float(since))
    return (" WHERE " + " AND ".join(parts)) if parts else "", params


class Store(VectorColumns):
    """Typed reads and atomic writes of episodes, runs and model versions. Thread-safe."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30.0)
        self.db = sqlite_utils.Database(conn)
        self.db.execute("PRAGMA busy_timeout = 30000")
        self.db.enable_wal()
        self.db.execute("PRAGMA synchronous = NORMAL")  # durable under WAL except on power loss
        self._lock = threading.RLock()
        with self._lock:
            migrate(conn, self.path)

    # ----- episodes: writes -----
    def put_episode(self, episode: Episode) -> None:
        """Insert or replace ``episode`` and all its attempts atomically; marks it not yet indexed."""
        self.put_episodes([episode])

    @staticmethod
    def _rows(episode: Episode) -> tuple[list[Any], list[list[Any]]]:
        head = episode.model_dump(mode="json", exclude={"attempts"})
        row = [
            episode.id, episode.run_id, episode.env, episode.task.id, episode.task.split, episode.task.question,
            episode.model_version, episode.feedback_source, int(episode.success), int(episode.first_success),
            int(episode.recovered), len(episode.attempts), episode.tokens, episode.created_at, episode.seconds,
            episode.error, json.dumps(head), time.time(), episode.purpose,
        ]
        attempt_rows = [
            [
                f"{episode.id}:{a.index}", episode.id, a.index, int(a.feedback.success), a.feedback.reward,
                a.answer, a.feedback.message, int(a.reflect is not None), a.solve.model_version,
                sum(c.prompt_tokens + c.completion_tokens for c in (a.solve, a.critique, a.reflect) if c),
                a.model_dump_json(),
            ]
            for a in episode.attempts
        ]
        return row, attempt_rows

    def put_episodes(self, episodes: list[Episode], vectors: np.ndarray | None = None) -> list[int | None]:
        """Insert or replace several episodes in one transaction (all or none); marks them not indexed.

        ``vectors`` (one row per episode, or ``None`` when embedding failed) are stored with them; returns
        each episode's ``vseq`` (``None`` without a vector), for :meth:`mark_indexed`."""
        cols = ("id, run_id, env, task_id, split, question, model_version, feedback_source, success, "
                "first_success, recovered, n_attempts, tokens, created_at, seconds, error, episode_json, updated_at, "
                "purpose")
        updates = ", ".join(f"{c.strip()} = excluded.{c.strip()}" for c in cols.split(",")[1:])
        seqs: list[int | None] = []
        with self._lock:
            conn = self.db.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                seq = self._max_seq(conn)
                for i, episode in enumerate(episodes):
                    row, attempt_rows = self._rows(episode)
                    blob = None if vectors is None else _blob(vectors[i])
                    seq += blob is not None
                    seqs.append(seq if blob is not None else None)
                    conn.execute(
                        f"INSERT INTO episodes ({cols}, vector, vseq, indexed) VALUES ({', '.join('?' * len(row))}, "
                        f"?, ?, 0) ON CONFLICT(id) DO UPDATE SET {updates}, vector = excluded.vector, "
                        "vseq = excluded.vseq, indexed = 0",
                        [*row, blob, seqs[-1]],
                    )
                    conn.execute("DELETE FROM attempts WHERE episode_id = ?", [episode.id])
                    conn.executemany(f"INSERT INTO attempts VALUES ({', '.join('?' * 11)})", attempt_rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return seqs

    def mark_indexed(self, ids: list[str], seqs: list[int | None] | None = None) -> None:
        """Mark episodes indexed; with ``seqs``, only if their vector is still that one (a row re-recorded
        by another process meanwhile stays pending, so its new vector gets indexed too)."""
        with self._lock:
            if seqs is not None:
                conn = self.db.conn
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany("UPDATE episodes SET indexed = 1 WHERE id = ? AND vseq IS ?",
                                     list(zip(ids, seqs, strict=True)))
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                return
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                self.db.execute(f"UPDATE episodes SET indexed = 1 WHERE id IN ({', '.join('?' * len(chunk))})", chunk)

    def reset_indexed(self, env: str | None = None) -> None:
        """Mark every episode (of ``env``) as not indexed, before a rebuild."""
        sql, params = where_clause(env=env)
        with self._lock:
            self.db.execute(f"UPDATE episodes SET indexed = 0{sql}", params)

    # ----- episodes: reads -----
    def _load(self, rows: list[tuple[str, str]]) -> list[Episode]:
        """Episodes from ``(id, episode_json)`` rows, with their attempts (one query per page)."""
        if not rows:
            return []
        ids = [r[0] for r in rows]
        attempts: dict[str, list[Any]] = {i: [] for i in ids}
        with self._lock:
            cursor = self.db.execute(
                f"SELECT episode_id, attempt_json FROM attempts WHERE episode_id IN ({', '.join('?' * len(ids))}) "
                "ORDER BY episode_id, idx",
                ids,
            )
            for episode_id, attempt_json in cursor.fetchall():
                attempts[episode_id].append(json.loads(attempt_json))
        out = []
        for episode_id, head in rows:
            data = json.loads(head)
            data["attempts"] = attempts[episode_id]
            out.append(Episode.model_validate(data))
        return out

    def get_episodes(self, ids: list[str]) -> dict[str, Episode]:
        """The episodes with these ids (unknown ids are left out)."""
        out: dict[str, Episode] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            with self._lock:
                rows = self.db.execute(
                    f"SELECT id, episode_json FROM episodes WHERE id IN ({', '.join('?' * len(chunk))})", chunk
                ).fetchall()
            out.update((ep.id, ep) for ep in self._load(rows))
        return out

    def get_episode(self, episode_id: str) -> Episode:
        with self._lock:
            rows = self.db.execute("SELECT id, episode_json FROM episodes WHERE id = ?", [episode_id]).fetchall()
        if not rows:
            raise KeyError(
                f"no episode {episode_id!r} in {self.path}; list ids with `selfevolve memory search` "
                "or `selfevolve memory stats`"
            )
        return self._load(rows)[0]

    def iter_episodes(
        self, page_size: int = 500, limit: int | None = None, unindexed_only: bool = False, **filters: Any
    ) -> Iterator[Episode]:
        """Episodes oldest first, read in pages of ``page_size`` (keyset pagination: O(n) for 100k+)."""
        for page in self.iter_pages(page_size, limit, unindexed_only, **filters):
            yield from page

    def iter_pages(
        self, page_size: int = 500, limit: int | None = None, unindexed_only: bool = False, **filters: Any
    ) -> Iterator[list[Episode]]:
        sql, params = where_clause(**filters)
        if unindexed_only:
            sql = (sql + " AND " if sql else " WHERE ") + "indexed = 0"
        last: tuple[float, int] = (float("-inf"), -1)
        remaining = limit
        while remaining is None or remaining > 0:
            size = page_size if remaining is None else min(page_size, remaining)
            keyset = "(created_at > ? OR (created_at = ? AND rowid > ?))"
            query = (f"SELECT id, episode_json, created_at, rowid FROM episodes"
                     f"{sql + ' AND ' if sql else ' WHERE '}{keyset} ORDER BY created_at, rowid LIMIT ?")
            with self._lock:
                rows = self.db.execute(query, [*params, last[0], last[0], last[1], size]).fetchall()
            if not rows:
                return
            last = (rows[-1][2], rows[-1][3])
            if remaining is not None:
                remaining -= len(rows)
            yield self._load([(r[0], r[1]) for r in rows])

    def count(self, unindexed_only: bool = False, **filters: Any) -> int:
        sql, params = where_clause(**filters)
        if unindexed_only:
            sql = (sql + " AND " if sql else " WHERE ") + "indexed = 0"
        with self._lock:
            return int(self.db.execute(f"SELECT count(*) FROM episodes{sql}", params).fetchone()[0])

    def has_env(self, env: str) -> bool:
        with self._lock:
            return self.db.execute("SELECT 1 FROM episodes WHERE env = ? LIMIT 1", [env]).fetchone() is not None

    def envs(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self.db.execute("SELECT DISTINCT env FROM episodes ORDER BY env").fetchall()]

    def index_counts(self, env: str | None = None) -> dict[str, tuple[int, int]]:
        """Per env: (episodes, episodes marked indexed)."""
        sql, params = where_clause(env=env)
        with self._lock:
            rows = self.db.execute(
                f"SELECT env, count(*), sum(indexed) FROM episodes{sql} GROUP BY env", params
            ).fetchall()
        return {env: (int(n), int(k or 0)) for env, n, k in rows}

    def feedback_sources(self, env: str | None = None) -> list[str]:
        """Distinct ``feedback_source`` values of the stored episodes (sorted)."""
        sql, params = where_clause(env=env)
        with self._lock:
            rows = self.db.execute(f"SELECT DISTINCT feedback_source FROM episodes{sql}", params).fetchall()
        return sorted(r[0] for r in rows if r[0] is not None)

    def aggregate(self, group_by: str, env: str | None = None) -> dict[str, dict[str, Any]]:
        """Counts and accuracies grouped by ``env`` or ``model_version``."""
        if group_by not in ("env", "model_version"):
            raise ValueError(f"group_by must be env or model_version, not {group_by!r}")
        sql, params = where_clause(env=env)
        with self._lock:
            rows = self.db.execute(
                f"SELECT {group_by}, count(*), sum(first_success), sum(success), sum(recovered), sum(tokens), "
                f"sum(error IS NOT NULL) FROM episodes{sql} GROUP BY {group_by} ORDER BY {group_by}",
                params,
            ).fetchall()
        out = {}
        for key, n, first, final, recovered, tokens, errors in rows:
            out[key] = {
                "episodes": int(n), "first_try_accuracy": first / n, "final_accuracy": final / n,
                "first_successes": int(first), "successes": int(final), "recovered": int(recovered),
                "tokens": int(tokens or 0), "errors": int(errors or 0),
            }
        return out

    # ----- runs -----
    def put_run(self, run: Run) -> None:
        with self._lock:
            self.db["runs"].upsert(
                {"id": run.id, "kind": run.kind, "env": run.env, "model_version": run.model_version,
                 "started_at": run.started_at, "finished_at": run.finished_at, "run_json": run.model_dump_json()},
                pk="id",
            )

    def get_run(self, run_id: str) -> Run:
        with self._lock:
            row = self.db.execute("SELECT run_json FROM runs WHERE id = ?", [run_id]).fetchone()
        if row is None:
            raise KeyError(f"no run {run_id!r} in {self.path}")
        return Run.model_validate_json(row[0])

    def list_runs(self) -> list[Run]:
        with self._lock:
            rows = self.db.execute("SELECT run_json FROM runs ORDER BY started_at").fetchall()
        return [Run.model_validate_json(r[0]) for r in rows]

    # ----- model versions -----
    def put_model_version(self, mv: ModelVersion, status_changed_at: float | None = None) -> None:
        with self._lock:
            self.db["model_versions"].upsert(
                {"id": mv.id, "status": mv.status, "parent": mv.parent, "method": mv.method,
                 "created_at": mv.created_at, "status_changed_at": time.time() if status_changed_at is None else status_changed_at,
                 "version_json": mv.model_dump_json()},
                pk="id",
            )

    def get_model_version(self, version_id: str) -> ModelVersion | None:
        with self._lock:
            row = self.db.execute("SELECT version_json FROM model_versions WHERE id = ?", [version_id]).fetchone()
        return None if row is None else ModelVersion.model_validate_json(row[0])

    def list_model_versions(self, status: str | None = None) -> list[ModelVersion]:
        """Oldest first; with ``status``, ordered by when they got it (most recent last)."""
        with self._lock:
            if status is None:
                rows = self.db.execute("SELECT version_json FROM model_versions ORDER BY created_at, rowid")
            else:
                rows = self.db.execute(
                    "SELECT version_json FROM model_versions WHERE status = ? ORDER BY status_changed_at, rowid",
                    [status],
                )
            return [ModelVersion.model_validate_json(r[0]) for r in rows.fetchall()]

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()


__all__ = ["FILTER_KEYS", "SCHEMA_VERSION", "SchemaError", "Store", "where_clause"]
