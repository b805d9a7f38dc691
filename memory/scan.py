"""Exact search over the vectors stored in SQLite: how a process that does not own the index searches.

Design decision: only the lease holder (:mod:`memory.lease`) opens the Chroma index, so every other
process of the workspace — ``selfevolve memory search`` while the daemon runs, a second ``selfevolve
run`` — searches the truth directly: the stored vectors, exact cosine top-k with numpy. It also serves
the owner when its index cannot be rebuilt. The vectors are read once and then only the rows whose
``vseq`` is newer than the last one seen, so a long-lived reader pays for each new episode once.
Results equal Chroma's up to HNSW's approximation (recall@5 ≈ 1 at these sizes, ``bench/memory.py``).

    python -c "from memory.store import Store; from memory.scan import VectorScan; \
print(VectorScan(Store('.selfevolve/experience.db')).refresh())"
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memory.store import Store

log = logging.getLogger(__name__)


@dataclass
class _EnvVectors:
    """One environment's rows, in arrays that grow by doubling."""

    dim: int
    n: int = 0
    ids: list[str] = field(default_factory=list)
    pos: dict[str, int] = field(default_factory=dict)
    matrix: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    flags: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=bool))  # success, first_success
    created: np.ndarray = field(default_factory=lambda: np.zeros(0))
    versions: list[str] = field(default_factory=list)

    def put(self, row: tuple[Any, ...], vector: np.ndarray) -> None:
        _, episode_id, _, success, first_success, model_version, created_at, _ = row
        i = self.pos.get(episode_id)
        if i is None:
            i = self.n
            if i == len(self.matrix):
                cap = max(256, 2 * i)
                self.matrix = np.resize(self.matrix, (cap, self.dim)) if i else np.zeros((cap, self.dim), np.float32)
                self.flags = np.resize(self.flags, (cap, 2))
                self.created = np.resize(self.created, cap)
            self.ids.append(episode_id)
            self.versions.append(str(model_version))
            self.pos[episode_id] = i
            self.n += 1
        self.matrix[i] = vector / max(float(np.linalg.norm(vector)), 1e-12)
        self.flags[i] = (bool(success), bool(first_success))
        self.created[i] = float(created_at or 0.0)
        self.versions[i] = str(model_version)

    def mask(self, success: bool | None, first_success: bool | None, model_version: str | None,
             since: float | None) -> np.ndarray:
        keep = np.ones(self.n, dtype=bool)
        if success is not None:
            keep &= self.flags[: self.n, 0] == success
        if first_success is not None:
            keep &= self.flags[: self.n, 1] == first_success
        if model_version is not None:
            keep &= np.asarray(self.versions[: self.n], dtype=object) == model_version
        if since is not None:
            keep &= self.created[: self.n] >= since
        return keep


class VectorScan:
    """Exact cosine top-k over SQLite's vectors, cached in memory and refreshed by ``vseq``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.seq = 0
        self.envs: dict[str, _EnvVectors] = {}
        self._warned: set[str] = set()

    def refresh(self) -> int:
        """Read the rows that changed since the last call; returns how many."""
        n = 0
        while True:
            rows = self.store.vector_rows(self.seq)
            for row in rows:
                vector = np.frombuffer(row[7], dtype=np.float32)
                env = self.envs.setdefault(row[2], _EnvVectors(dim=len(vector)))
                if len(vector) == env.dim:
                    env.put(row, vector)
                elif row[2] not in self._warned:
                    self._warned.add(row[2])
                    log.warning("episodes of %r hold vectors of dimension %d and %d (two embedders); searching the "
                                "first kind — `selfevolve memory reindex --reembed` makes them one", row[2], env.dim,
                                len(vector))
            n += len(rows)
            if rows:
                self.seq = int(rows[-1][0])
            if len(rows) < 4096:
                return n

    def query(
        self, vector: np.ndarray, envs: list[str], k: int, success: bool | None = None,
        first_success: bool | None = None, model_version: str | None = None, since: float | None = None,
    ) -> list[tuple[str, float]]:
        """``(episode id, cosine similarity)`` of the ``k`` best rows of ``envs``, best first."""
        self.refresh()
        q = np.asarray(vector, dtype=np.float32)
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        found: list[tuple[str, float]] = []
        for name in envs:
            env = self.envs.get(name)
            if env is None or env.n == 0 or k <= 0:
                continue
            if env.dim != len(q):
                raise ValueError(f"the query vector has dimension {len(q)} but {name!r}'s stored vectors {env.dim}: "
                                 "search with the embedder that recorded them, or `selfevolve memory reindex --reembed`")
            idx = np.flatnonzero(env.mask(success, first_success, model_version, since))
            if not len(idx):
                continue
            scores = env.matrix[idx] @ q
            top = np.argpartition(-scores, min(k, len(idx)) - 1)[:k] if len(idx) > k else np.arange(len(idx))
            found.extend((env.ids[idx[t]], float(scores[t])) for t in top)
        found.sort(key=lambda hit: -hit[1])
        return found[:k]
