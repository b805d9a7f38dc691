"""IndexKeeper: keeps the Chroma index whole, from one process per workspace, and never lets it crash one.

Design decisions (the numbers behind them: docs/reliability.md, "Experience library")
- **One owner.** The process holding the index lease (:mod:`memory.lease`) is the only one that opens
  the embedded index or writes a server's collections: it indexes its own episodes, catches up the rows
  other processes left pending (``indexed = 0``), verifies and rebuilds. Every other process is a
  *guest*: it writes SQLite (WAL, busy timeout) and searches the stored vectors exactly
  (:mod:`memory.scan`); it never drops, rebuilds or even opens the index, so two processes can no longer
  take each other's new rows for corruption. A guest retries the lease (at most once a second) and
  takes over when the owner exits, kill -9 included; at close it takes the lease if it is free, so the
  last process to leave indexes what is pending. ``reindex`` in a guest waits for the lease, then says
  in one line who holds it.
- **Detect before use, in a way that cannot crash the caller.** Before the embedded directory is opened
  in-process, :mod:`memory.health` checks its seal (a clean close) or probes it in a child process (after
  an unclean one). Then every collection is verified against SQLite — count, a sample of ids and their
  vectors, one search for a stored vector — on first use and in every ``stats``.
- **Heal, then go on.** Any failure of an index call — ``BaseException`` subclasses from native code
  (pyo3's ``PanicException``) included, only Ctrl-C/exit/cancellation passed through — rebuilds that
  collection from SQLite's stored vectors (no re-embedding); if that fails too, the whole index; if even
  that fails, this process searches SQLite directly and says so. One warning line each, never a
  traceback; SQLite, the truth, is never touched by a repair except for the ``indexed`` flags.

    python -c "from memory import ExperienceLibrary as L; print(L('.selfevolve').index_status()['status'])"
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from memory import health
from memory.hnsw_check import check_dir
from memory.index import IndexUnavailable, Match, VectorIndex, reraise_fatal, where_filter
from memory.lease import IndexLease
from memory.records import Episode
from memory.repair import REINDEX, NoIndex, Progress, Repairs, describe, metadata
from memory.scan import VectorScan
from memory.store import Store

log = logging.getLogger(__name__)
RETRY_S = 1.0


class IndexBusy(RuntimeError):
    """Another process owns the index (a rebuild has to wait for it)."""


class IndexKeeper(Repairs):
    """The index side of an :class:`memory.library.ExperienceLibrary` (see the module docstring)."""

    def __init__(self, workspace: Path, store: Store, embedder: Any, url: str | None, prefix: str,
                 probe_timeout_s: float = 120.0) -> None:
        self.workspace, self.store, self.embedder, self.url, self.prefix = workspace, store, embedder, url, prefix
        self.chroma_dir = workspace / "chroma"
        self.seal_path = workspace / "chroma.seal.json"
        self.probe_timeout_s = probe_timeout_s
        self.lease = IndexLease(workspace / "index.lock")
        self.scan = VectorScan(store)
        self.index: VectorIndex | None = None
        self.degraded: str | None = None  # why this process searches SQLite although it owns the lease
        self.unreachable: str | None = None  # the index did not answer the last call (a server down)
        self.healed: list[str] = []  # one line per repair made in this process
        self.checks: dict[str, dict[str, Any]] = {}  # the last verification of each env
        self.indexed = 0  # episodes upserted by this process (sync's return value)
        self.last_error: str | None = None
        self._verified: set[str] = set()
        self._lock = threading.RLock()
        self._next_try = 0.0
        self._embedded_missing = False
        self.try_own(force=True)  # an unreachable server or an unusable disk is a clear error at once

    @property
    def owner(self) -> bool:
        return self.index is not None

    # ----- ownership -----
    def try_own(self, force: bool = False, wait_s: float = 0.0) -> bool:
        """Become the owner if the lease is free (rate-limited unless ``force``); True if owner now."""
        with self._lock:
            if self.index is not None:
                return True
            if self.degraded is not None and not force:
                return False
            now = time.monotonic()
            if not force and now < self._next_try:
                return False
            self._next_try = now + RETRY_S
            if not self.lease.acquire(wait_s):
                return False
            try:
                self._open()
            except BaseException as e:
                self._drop_index()
                self.lease.release()
                if force or not isinstance(e, IndexUnavailable):
                    raise
                log.warning("%s; searching SQLite meanwhile", e)
                return False
            if self.degraded is not None:  # even a fresh index is unusable: let someone else try
                self.lease.release()
                return False
            return True

    def _open(self) -> None:
        self.degraded = None
        self._verified.clear()
        if self.url is not None:
            self.index = VectorIndex(url=self.url, prefix=self.prefix)
        else:
            verdict = health.inspect(self.chroma_dir, self.seal_path)
            reason = verdict.detail if verdict.state == "changed" else None
            if verdict.state == "unsealed":  # files first (cannot crash), then the child probe
                failure = (check_dir(self.chroma_dir, health.segment_ids(self.chroma_dir))
                           or health.probe(self.chroma_dir, self.prefix, self.probe_timeout_s))
                reason = f"{failure}; {verdict.detail}" if failure else None
            health.unseal(self.seal_path)
            if reason is not None:
                self._discard(f"it changed since its last clean close: {reason}" if verdict.state == "changed"
                              else reason)
            self.index = self._connect()
            health.remove_orphans(self.chroma_dir)
        for env in self.store.envs():
            try:
                self.ensure(env)
            except NoIndex:
                return

    def index_new(self, episodes: list[Episode], vectors: np.ndarray, seqs: list[int | None]) -> None:
        """Index freshly recorded episodes (owner only; a guest leaves them pending for the owner)."""
        self.try_own()
        with self._lock:
            if self.index is None:
                return
            try:
                for env in dict.fromkeys(ep.env for ep in episodes):
                    rows = [(i, ep) for i, ep in enumerate(episodes) if ep.env == env]
                    self.index.upsert(env, [ep.id for _, ep in rows], vectors[[i for i, _ in rows]],
                                      [metadata(ep) for _, ep in rows])
                    self.store.mark_indexed([ep.id for _, ep in rows], [seqs[i] for i, _ in rows])
                    self.indexed += len(rows)
            except BaseException as e:  # SQLite has them; the next search checks this env and catches up
                reraise_fatal(e)
                self.last_error = describe(e)
                self._verified.difference_update(ep.env for ep in episodes)
                self.index.forget()
                log.warning("indexing %d episode(s) failed (%s); they are saved, and the index catches up on the "
                            "next search or %s", len(episodes), self.last_error, REINDEX)

    # ----- searching -----
    def query(self, vector: np.ndarray, envs: list[str], k: int, **filters: Any) -> list[Match | tuple[str, float]]:
        """Matches from the index (owner), else ``(id, score)`` pairs from SQLite's vectors; best first."""
        self.try_own()
        where = where_filter(**filters)
        with self._lock:
            if self.index is not None:
                try:
                    matches: list[Match] = []
                    for env in envs:
                        matches.extend(self.run(env, f"searching {env!r}", lambda env=env: self._query(env, vector,
                                                                                                      k, where)))
                    return sorted(matches, key=lambda m: -m.score)[:k]
                except NoIndex:
                    pass  # degraded just now: answer from SQLite below
        with self._lock:  # the scan's arrays are shared by this process's threads
            if not self._embedded_missing:  # rows recorded before schema 2 get their vector once
                self._embedded_missing = True
                self.embed_missing(None)
            return list(self.scan.query(vector, envs, k, **filters))

    def _query(self, env: str, vector: np.ndarray, k: int, where: dict[str, Any] | None) -> list[Match]:
        assert self.index is not None
        if self.index.collection(env, create=False) is None and not self.store.count(env=env, unindexed_only=False):
            return []
        return self.index.query(env, vector, k, where)

    # ----- reports and lifetime -----
    def status(self) -> dict[str, Any]:
        """Per env: episodes, indexed, vectors in the index and how far behind it is — verified now, against
        SQLite (count, sampled ids and vectors, a search), and repaired if that fails."""
        self.try_own(force=True)
        envs: dict[str, Any] = {}
        with self._lock:
            for env, (total, indexed) in self.store.index_counts().items():
                envs[env] = {"episodes": total, "indexed": indexed, "in_index": None, "behind": total - indexed}
                if self.index is None:
                    continue
                self._verified.discard(env)
                try:
                    self.ensure(env)
                    envs[env] = self._env_status(env)
                except NoIndex:
                    envs[env]["behind"] = self.store.count(env=env, unindexed_only=True)
            owner = self.index is not None
        behind = sum(v["behind"] for v in envs.values())
        if owner and self.unreachable is None:
            verified = "now: count, sampled ids and vectors, a search"
        elif owner or self.degraded:
            verified = f"no: {self.unreachable or self.degraded}"
        else:  # a guest: the owner's index is not ours to open
            verified = f"not here: in use by {self.lease.describe_holder()}, which keeps it up to date"
        return {"location": self.location, "status": "in sync" if behind == 0 else f"behind by {behind}",
                "behind": behind, "owner": owner, "verified": verified, "healed": list(self.healed), "envs": envs}

    def _env_status(self, env: str) -> dict[str, Any]:
        total, indexed = self.store.index_counts(env).get(env, (0, 0))
        in_index = self.run(env, f"counting {env!r}", lambda: self.index.count(env))  # type: ignore[union-attr]
        check = self.checks.get(env, {})
        return {"episodes": total, "indexed": indexed, "in_index": in_index,
                "behind": max(0, total - min(indexed, in_index)), "sampled": check.get("sampled", 0),
                "vectors_match": bool(check.get("vectors_match")) or not check.get("sampled")}

    def sync(self, env: str | None = None, progress: Progress | None = None) -> int:
        """Index what is pending (owner only); returns how many episodes were (re)indexed."""
        before = self.indexed
        if not self.try_own():
            return 0
        try:
            for name in [env] if env is not None else self.store.envs():
                self.ensure(name, progress)
        except NoIndex:
            pass  # degraded: said once, searches go to SQLite
        return self.indexed - before

    def reindex(self, env: str | None = None, progress: Progress | None = None, wait_s: float = 30.0) -> int:
        """Rebuild the index (of one env) from SQLite, waiting up to ``wait_s`` for the lease."""
        if not self.try_own(force=True, wait_s=wait_s):
            if self.degraded is not None:
                raise IndexUnavailable(f"the Chroma index at {self.location} cannot be rebuilt: {self.degraded}")
            raise IndexBusy(
                f"the index of {self.workspace} is in use by {self.lease.describe_holder()}, which keeps it up to "
                f"date itself; stop that process to rebuild it, or wait longer (--wait SECONDS)"
            )
        try:
            with self._lock:
                return self.rebuild_env(env, progress) if env is not None else self.rebuild_all(None, progress)
        except BaseException as e:
            reraise_fatal(e)
            self._degrade(f"rebuilding it failed ({describe(e)})")
            raise IndexUnavailable(f"rebuilding the Chroma index at {self.location} failed ({describe(e)}); "
                                   f"check the disk, then run {REINDEX} again") from e

    def close(self) -> None:
        """Index what is pending if this process can own the index, then seal it and release the lease."""
        for _ in range(3):  # release, then look again: rows a guest wrote meanwhile are not left behind
            with self._lock:
                if self.index is None and not (self.store.count(unindexed_only=True) and self._try_quietly()):
                    return
                self._finish()
            if not self.store.count(unindexed_only=True):
                return

    def _try_quietly(self) -> bool:
        try:
            return self.try_own(force=True)
        except BaseException as e:  # closing must not fail because the index cannot be opened now
            reraise_fatal(e)
            log.warning("the pending episodes stay unindexed for now (%s)", describe(e))
            return False

    def _finish(self) -> None:
        try:
            self.sync()
        except BaseException as e:  # pending rows stay pending: the next owner indexes them
            reraise_fatal(e)
            log.warning("indexing pending episodes at close failed (%s)", describe(e))
        clean = self.index is not None
        try:
            if self.index is not None:
                self.index.close()
        except BaseException as e:
            reraise_fatal(e)
            clean = False
        self.index = None
        if clean and self.url is None:
            health.remove_orphans(self.chroma_dir)
            health.seal(self.chroma_dir, self.seal_path)
        self.lease.release()
