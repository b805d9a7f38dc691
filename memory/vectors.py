"""Vector columns of the episode store: each episode's embedding, kept in SQLite beside it.

Design decision: the Chroma index is rebuildable, so the vectors it is built from live with the truth.
A rebuild then upserts stored vectors (no re-embedding), ``memory stats`` compares the index's vectors
with these, and a process that does not own the index searches them exactly (:mod:`memory.scan`).
``vseq`` grows in commit order (``max + 1`` inside the write transaction), so a reader asks only for
rows changed since the last ``vseq`` it saw.

    python -c "from memory.store import Store; print(len(Store('.selfevolve/experience.db').vector_rows(0)))"
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memory.records import Episode


class VectorColumns:
    """Mixed into :class:`memory.store.Store`, which provides ``db``, ``_lock`` and ``_load``."""

    db: Any
    _lock: Any
    _load: Any

    @staticmethod
    def _max_seq(conn: Any) -> int:
        """The highest ``vseq`` so far; call inside the write transaction (commit order = ``vseq`` order)."""
        return int(conn.execute("SELECT coalesce(max(vseq), 0) FROM episodes").fetchone()[0])

    def set_vectors(self, ids: list[str], vectors: np.ndarray) -> list[int]:
        """Store vectors for episodes that lack them (old rows, a failed embedding); returns their vseqs."""
        with self._lock:
            conn = self.db.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                seq = self._max_seq(conn)
                seqs = list(range(seq + 1, seq + 1 + len(ids)))
                conn.executemany("UPDATE episodes SET vector = ?, vseq = ?, indexed = 0 WHERE id = ?",
                                 [(_blob(v), s, i) for i, v, s in zip(ids, vectors, seqs, strict=True)])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return seqs

    def clear_vectors(self, env: str | None = None) -> None:
        """Forget stored vectors (of ``env``): the next rebuild embeds again (a new embedder)."""
        sql, params = _where_env(env)
        with self._lock:
            self.db.execute(f"UPDATE episodes SET vector = NULL, vseq = NULL, indexed = 0{sql}", params)

    def vectors(self, ids: list[str]) -> dict[str, tuple[int | None, np.ndarray | None]]:
        """``{id: (vseq, vector or None)}`` for these ids (unknown ids are left out)."""
        out: dict[str, tuple[int | None, np.ndarray | None]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            with self._lock:
                rows = self.db.execute(
                    f"SELECT id, vseq, vector FROM episodes WHERE id IN ({', '.join('?' * len(chunk))})", chunk
                ).fetchall()
            out.update((i, (seq, _vector(blob))) for i, seq, blob in rows)
        return out

    def vector_rows(self, after: int, limit: int = 4096) -> list[tuple[Any, ...]]:
        """Rows whose vector changed after ``vseq`` ``after``, in vseq order: ``(vseq, id, env, success,
        first_success, model_version, created_at, vector bytes)``."""
        with self._lock:
            return self.db.execute(
                "SELECT vseq, id, env, success, first_success, model_version, created_at, vector FROM episodes "
                "WHERE vseq > ? ORDER BY vseq LIMIT ?", [after, limit],
            ).fetchall()

    def without_vectors(self, limit: int = 512, env: str | None = None) -> list[Episode]:
        """Episodes stored without a vector (recorded before schema 2, or while the embedder failed)."""
        sql, params = _where_env(env)
        sql = (sql + " AND " if sql else " WHERE ") + "vector IS NULL"
        with self._lock:
            rows = self.db.execute(f"SELECT id, episode_json FROM episodes{sql} LIMIT ?", [*params, limit]).fetchall()
        return self._load(rows)

    def sample_indexed(self, env: str, n: int) -> list[tuple[str, np.ndarray | None]]:
        """Up to ``n`` random episodes of ``env`` marked indexed, with their vectors (for verification)."""
        with self._lock:
            rowids = [r[0] for r in self.db.execute(
                "SELECT rowid FROM episodes WHERE env = ? AND indexed = 1 ORDER BY random() LIMIT ?", [env, n]
            ).fetchall()]
            rows = self.db.execute(
                f"SELECT id, vector FROM episodes WHERE rowid IN ({', '.join('?' * len(rowids))})", rowids
            ).fetchall() if rowids else []
        return [(i, _vector(blob)) for i, blob in rows]


def _blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def _vector(blob: bytes | None) -> np.ndarray | None:
    return None if blob is None else np.frombuffer(blob, dtype=np.float32)


def _where_env(env: str | None) -> tuple[str, list[Any]]:
    return (" WHERE env = ?", [env]) if env is not None else ("", [])
