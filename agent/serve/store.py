"""Every served completion, kept in its own SQLite file (``<workspace>/served.db``) until rated.

Design decisions
- Its own file and table, not the experience library's: a served completion is not an episode until a
  user rates it (then :mod:`agent.serve.feedback` records one through ``ExperienceLibrary.record``).
- One row per choice, keyed ``(id, idx)``: ``id`` is the response's ``chatcmpl-…`` id, ``idx`` the
  choice index. The row keeps what the client sent (``request_messages``), what the model saw
  (``prompt_messages``, with retrieved experiences), the output, its version and token counts.
- Rating is write-once: :meth:`ServedStore.mark_rated` updates only a row whose ``rated_at`` is NULL,
  so a second rating of the same choice — even from another process — changes nothing.
- WAL and a busy timeout, as memory/store.py, so the dashboard and the server read while it writes.

    python -c "from agent.serve.store import ServedStore; print(ServedStore('.selfevolve/served.db').counts())"
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
_COLUMNS = ("id", "idx", "created_at", "model", "version", "env", "request_messages", "prompt_messages",
            "output", "finish_reason", "prompt_tokens", "completion_tokens", "latency_s", "params",
            "retrieved_ids", "rated_at", "episode_id", "rating")


@dataclass
class ServedCompletion:
    """One served choice; ``rating`` is the feedback once rated."""

    id: str
    idx: int
    model: str
    version: str
    request_messages: list[dict[str, str]]
    prompt_messages: list[dict[str, str]]
    output: str
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    retrieved_ids: list[str] = field(default_factory=list)
    env: str | None = None
    created_at: float = field(default_factory=time.time)
    rated_at: float | None = None
    episode_id: str | None = None
    rating: dict[str, Any] | None = None

    def row(self) -> tuple[Any, ...]:
        return (self.id, self.idx, self.created_at, self.model, self.version, self.env,
                json.dumps(self.request_messages), json.dumps(self.prompt_messages), self.output,
                self.finish_reason, self.prompt_tokens, self.completion_tokens, self.latency_s,
                json.dumps(self.params), json.dumps(self.retrieved_ids), self.rated_at, self.episode_id,
                None if self.rating is None else json.dumps(self.rating))

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> ServedCompletion:
        d = dict(row)
        for key in ("request_messages", "prompt_messages", "params", "retrieved_ids", "rating"):
            d[key] = None if d[key] is None else json.loads(d[key])
        return cls(**d)


class ServedStore:
    """Thread-safe reads and writes of served completions."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30.0)
        self.conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        with self._lock:
            self.conn.execute("PRAGMA busy_timeout = 30000")
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = NORMAL")
            self._migrate()

    def _migrate(self) -> None:
        c = self.conn
        c.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        row = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path} has schema version {version}, this selfevolve knows {SCHEMA_VERSION}: "
                               "upgrade selfevolve or use another workspace")
        c.execute(
            "CREATE TABLE IF NOT EXISTS served_completions ("
            "id TEXT NOT NULL, idx INTEGER NOT NULL, created_at REAL NOT NULL, model TEXT, version TEXT, env TEXT, "
            "request_messages TEXT NOT NULL, prompt_messages TEXT NOT NULL, output TEXT NOT NULL, finish_reason TEXT, "
            "prompt_tokens INTEGER, completion_tokens INTEGER, latency_s REAL, params TEXT, retrieved_ids TEXT, "
            "rated_at REAL, episode_id TEXT, rating TEXT, PRIMARY KEY (id, idx))"
        )
        c.execute("CREATE INDEX IF NOT EXISTS served_rated ON served_completions (rated_at)")
        c.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])

    def put(self, completions: list[ServedCompletion]) -> None:
        """Keep every choice of one response (one transaction)."""
        sql = f"INSERT INTO served_completions ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.executemany(sql, [c.row() for c in completions])
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    def get(self, completion_id: str, idx: int = 0) -> ServedCompletion | None:
        with self._lock:
            row = self.conn.execute("SELECT * FROM served_completions WHERE id = ? AND idx = ?",
                                    [completion_id, idx]).fetchone()
        return None if row is None else ServedCompletion.from_row(row)

    def choices(self, completion_id: str) -> int:
        with self._lock:
            return int(self.conn.execute("SELECT count(*) FROM served_completions WHERE id = ?",
                                         [completion_id]).fetchone()[0])

    def mark_rated(self, completion_id: str, idx: int, episode_id: str, rating: dict[str, Any]) -> bool:
        """Record the rating once; False if the choice was already rated (nothing changed)."""
        with self._lock:
            cur = self.conn.execute(
                "UPDATE served_completions SET rated_at = ?, episode_id = ?, rating = ? "
                "WHERE id = ? AND idx = ? AND rated_at IS NULL",
                [time.time(), episode_id, json.dumps(rating), completion_id, idx],
            )
            return cur.rowcount == 1

    def counts(self) -> dict[str, Any]:
        """Served / rated / successes overall and per version and env (for the dashboard)."""
        query = ("SELECT version, coalesce(json_extract(rating, '$.env'), env, 'served'), count(*), "
                 "count(rated_at), sum(coalesce(json_extract(rating, '$.success'), 0)), "
                 "sum(prompt_tokens + completion_tokens) FROM served_completions GROUP BY 1, 2 ORDER BY 1, 2")
        with self._lock:
            rows = self.conn.execute(query).fetchall()
            last = self.conn.execute("SELECT max(created_at), max(rated_at) FROM served_completions").fetchone()
        groups = [{"version": v, "env": e, "served": int(n), "rated": int(r), "successes": int(s or 0),
                   "failures": int(r) - int(s or 0), "tokens": int(t or 0)} for v, e, n, r, s, t in rows]
        total = {k: sum(g[k] for g in groups) for k in ("served", "rated", "successes", "failures", "tokens")}
        return {**total, "groups": groups, "last_served_at": last[0], "last_rated_at": last[1]}

    def close(self) -> None:
        with self._lock:
            self.conn.close()
