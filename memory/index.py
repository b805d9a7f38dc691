"""The Chroma vector index over episodes: rebuildable, never the truth.

Design decisions
- ``PersistentClient`` at ``<workspace>/chroma`` by default; ``HttpClient`` when a URL is given (a
  shared ``chroma run`` server). Both behave the same to the library.
- One collection per environment, so a search with an env filter only touches that env's HNSW graph.
  Env specs such as ``arithmetic:digits=2`` are not valid Chroma names (3–63 chars of
  ``[a-zA-Z0-9._-]``), so the name is ``<prefix>-<sanitised spec>-<sha1 of spec>``: readable and stable,
  and two specs that sanitise alike still get different collections.
- Cosine space; the vectors come from :mod:`memory.embed` (unit length) and are always passed
  explicitly: collections are created with ``embedding_function=None`` so Chroma never loads its own
  (downloading) default embedder.
- This module never repairs anything: any failure of the native client, ``BaseException`` subclasses
  such as pyo3's ``PanicException`` included, surfaces as :class:`IndexBroken` (opening) or as the
  error itself (an operation), and :mod:`memory.keeper` decides (rebuild from SQLite). What a native
  crash cannot raise — a segfault, an abort — :mod:`memory.health` catches first, in a child process.

    python -c "from memory.index import collection_name; print(collection_name('arithmetic:digits=2'))"
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

import chromadb  # noqa: E402
from chromadb.api.shared_system_client import SharedSystemClient  # noqa: E402
from chromadb.config import Settings  # noqa: E402

log = logging.getLogger(__name__)

MAX_UPSERT = 1000


HNSW: dict[str, Any] = {"space": "cosine"}
"""The configuration of new collections (tests lower ``sync_threshold`` to get HNSW files with few vectors)."""

PASS_THROUGH = (KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError)
"""BaseExceptions that mean "stop", never "the index is broken"; everything else from Chroma does."""


def reraise_fatal(error: BaseException) -> None:
    """Re-raise ``error`` if it asks the program to stop (Ctrl-C, exit, cancellation)."""
    if isinstance(error, PASS_THROUGH):
        raise error


class IndexUnavailable(RuntimeError):
    """The Chroma index cannot be opened or reached."""


class IndexBroken(IndexUnavailable):
    """The embedded index directory cannot be opened: rebuild it from SQLite."""


def unreachable(error: BaseException) -> bool:
    """A failure to reach the index (a server down, a timeout): worth a retry later, not a rebuild."""
    import httpx

    if isinstance(error, IndexBroken):
        return False
    return isinstance(error, ConnectionError | TimeoutError | httpx.TransportError | IndexUnavailable)


class CollectionMissing(LookupError):
    """The environment has no collection in the index (never indexed, or deleted)."""


def collection_name(env: str, prefix: str = "ep") -> str:
    """A valid, stable Chroma collection name for an environment spec."""
    digest = hashlib.sha1(env.encode("utf-8")).hexdigest()[:10]
    body = re.sub(r"[^a-zA-Z0-9._-]+", "_", env)
    body = re.sub(r"\.{2,}", ".", body).strip("._-")[:40] or "env"
    name = f"{prefix}-{body}-{digest}"
    if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9._-]{1,61}[a-zA-Z0-9]", name):
        raise ValueError(f"collection prefix {prefix!r} gives an invalid Chroma name {name!r}; use [a-zA-Z0-9]+")
    return name


@dataclass(frozen=True)
class Match:
    id: str
    score: float  # cosine similarity, 1 = same direction
    metadata: dict[str, Any]


def _settings() -> Settings:
    return Settings(anonymized_telemetry=False, allow_reset=False)


class VectorIndex:
    """Per-environment Chroma collections of episode vectors."""

    def __init__(self, path: str | Path | None = None, url: str | None = None, prefix: str = "ep") -> None:
        if (path is None) == (url is None):
            raise ValueError("give exactly one of path (embedded Chroma) or url (Chroma server)")
        self.path = Path(path) if path is not None else None
        self.url = url
        self.prefix = prefix
        collection_name("x", prefix)  # validate the prefix early
        self._collections: dict[str, Any] = {}
        self.client: Any = self._connect()

    @property
    def location(self) -> str:
        return self.url or str(self.path)

    def _connect(self) -> Any:
        if self.url is not None:
            parsed = urlparse(self.url if "://" in self.url else f"http://{self.url}")
            try:
                client = chromadb.HttpClient(
                    host=parsed.hostname or "127.0.0.1", port=parsed.port or 8000,
                    ssl=parsed.scheme == "https", settings=_settings(),
                )
                client.heartbeat()
            except Exception as e:  # httpx / chromadb raise several types for "not reachable"
                raise IndexUnavailable(
                    f"cannot reach the Chroma server at {self.url} ({e}); start one with "
                    "`chroma run --path <dir> --port <port>` or drop --chroma-url to use the embedded index"
                ) from e
            return client
        assert self.path is not None
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            client = chromadb.PersistentClient(path=str(self.path), settings=_settings())
            client.list_collections()
            return client
        except BaseException as e:  # a corrupt directory: sqlite, rust (PanicException) or value errors
            reraise_fatal(e)
            forget_system(self.path)
            raise IndexBroken(f"{type(e).__name__}: {e}") from e

    # ----- collections -----
    def collection(self, env: str, create: bool = True) -> Any | None:
        if env in self._collections:
            return self._collections[env]
        name = collection_name(env, self.prefix)
        if create:
            col = self.client.get_or_create_collection(
                name, embedding_function=None, metadata={"env": env}, configuration={"hnsw": dict(HNSW)},
            )
        else:
            try:
                col = self.client.get_collection(name, embedding_function=None)
            except Exception:  # chromadb raises NotFoundError/ValueError depending on client type
                return None
        self._collections[env] = col
        return col

    def count(self, env: str) -> int:
        """Vectors in the env's collection (0 if it does not exist, e.g. deleted by someone else)."""
        col = self.collection(env, create=False)
        if col is None:
            return 0
        try:
            return int(col.count())
        except Exception:  # a stale handle to a deleted collection: resolve the name again
            self.forget(env)
            col = self.collection(env, create=False)
            return 0 if col is None else int(col.count())

    def drop(self, env: str) -> None:
        """Delete the env's collection (a no-op if it does not exist)."""
        self._collections.pop(env, None)
        name = collection_name(env, self.prefix)
        if name in {c.name for c in self.client.list_collections()}:
            self.client.delete_collection(name)

    def forget(self, env: str | None = None) -> None:
        """Drop cached collection handles (after an error, so the next call re-resolves them)."""
        if env is None:
            self._collections.clear()
        else:
            self._collections.pop(env, None)

    # ----- data -----
    def upsert(
        self, env: str, ids: Sequence[str], vectors: np.ndarray, metadatas: Sequence[dict[str, Any]],
        documents: Sequence[str] | None = None,
    ) -> None:
        col = self.collection(env)
        step = min(MAX_UPSERT, int(self.client.get_max_batch_size()))
        for i in range(0, len(ids), step):
            col.upsert(
                ids=list(ids[i : i + step]), embeddings=vectors[i : i + step],
                metadatas=list(metadatas[i : i + step]),
                documents=None if documents is None else list(documents[i : i + step]),
            )

    def query(self, env: str, vector: np.ndarray, k: int, where: dict[str, Any] | None = None) -> list[Match]:
        col = self.collection(env, create=False)
        if col is None:
            raise CollectionMissing(f"no collection for {env!r} in the index at {self.location}")
        if k <= 0:
            return []
        result = col.query(
            query_embeddings=vector.reshape(1, -1), n_results=k, where=where or None,
            include=["metadatas", "distances"],
        )
        ids, dists, metas = result["ids"][0], result["distances"][0], result["metadatas"][0]
        return [Match(i, 1.0 - float(d), dict(m or {})) for i, d, m in zip(ids, dists, metas, strict=True)]

    def vectors(self, env: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors of these ids (ids the collection lacks are left out)."""
        col = self.collection(env, create=False)
        if col is None:
            raise CollectionMissing(f"no collection for {env!r} in the index at {self.location}")
        got = col.get(ids=list(ids), include=["embeddings"])
        return {i: np.asarray(v, dtype=np.float32) for i, v in zip(got["ids"], got["embeddings"], strict=True)}

    def names(self) -> list[str]:
        """This prefix's collection names."""
        return [c.name for c in self.client.list_collections() if c.name.startswith(f"{self.prefix}-")]

    def close(self) -> None:
        """Release the client; afterwards nothing of this process touches the directory."""
        self._collections.clear()
        close = getattr(self.client, "close", None)
        try:
            if close is not None:
                close()
        finally:
            if self.path is not None:
                forget_system(self.path)


def forget_system(path: Path) -> None:
    """Drop chromadb's per-path cache of a started system (1.5.x keeps one even after a failed start or
    ``close()``), so the next client of ``path`` starts afresh."""
    SharedSystemClient._identifier_to_system.pop(str(path), None)
    SharedSystemClient._identifier_to_refcount.pop(str(path), None)


def where_filter(**conditions: Any) -> dict[str, Any] | None:
    """A Chroma ``where`` from equality conditions (``None`` values skipped; ``since`` → ``$gte``)."""
    clauses: list[dict[str, Any]] = []
    for key, value in conditions.items():
        if value is None:
            continue
        if key == "since":
            clauses.append({"created_at": {"$gte": float(value)}})
        else:
            clauses.append({key: value})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}
