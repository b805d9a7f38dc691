"""Repairs of the index from SQLite, the truth: the half of :class:`memory.keeper.IndexKeeper` that heals.

Escalation, each step one warning line: a failed call (any ``BaseException`` but Ctrl-C, exit and
cancellation) rebuilds that environment's collection from the stored vectors and is tried once more;
if the rebuild fails, the whole index is rebuilt (a new embedded directory, or this prefix's server
collections); if that fails too, the process stops using the index (``degraded``), releases the lease,
and searches SQLite until ``selfevolve memory reindex`` succeeds. A verification (count, sampled ids
and vectors, one search for a stored vector) runs on each environment's first use and in ``stats``.

    python -c "from memory import ExperienceLibrary as L; print(L('.selfevolve').sync())"
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from memory import health
from memory.index import IndexBroken, IndexUnavailable, VectorIndex, reraise_fatal, unreachable
from memory.lease import IndexLease
from memory.records import Episode
from memory.store import Store

log = logging.getLogger(__name__)
T = TypeVar("T")
Progress = Callable[[int], None]
PAGE = 512
SAMPLE = 8
REINDEX = "`selfevolve memory reindex`"


class NoIndex(Exception):
    """This process has no usable index right now: search SQLite instead."""


def describe(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__


def metadata(ep: Episode) -> dict[str, Any]:
    """What the index stores beside an episode's vector (enough to build a search hit)."""
    meta: dict[str, Any] = {
        "env": ep.env, "success": ep.success, "first_success": ep.first_success,
        "model_version": ep.model_version, "created_at": float(ep.created_at), "hint": ep.hint_text(),
        "task_id": ep.task.id, "split": ep.task.split,  # what retrieval's filters need, without a SQLite read
    }
    if ep.run_id:
        meta["run_id"] = ep.run_id
    return meta


class Repairs:
    """Verification, catch-up and rebuilds; mixed into the keeper, which sets these attributes."""

    workspace: Path
    store: Store
    embedder: Any
    url: str | None
    prefix: str
    chroma_dir: Path
    seal_path: Path
    lease: IndexLease
    index: VectorIndex | None
    degraded: str | None
    unreachable: str | None
    healed: list[str]
    checks: dict[str, dict[str, Any]]
    indexed: int
    _verified: set[str]
    _lock: Any

    @property
    def location(self) -> str:
        return self.url or str(self.chroma_dir)

    def _connect(self) -> VectorIndex:
        try:
            return VectorIndex(path=self.chroma_dir, prefix=self.prefix)
        except IndexBroken as e:
            self._discard(f"opening it failed ({e})")
        try:
            return VectorIndex(path=self.chroma_dir, prefix=self.prefix)
        except IndexBroken as e:
            raise IndexUnavailable(
                f"cannot create a Chroma index at {self.chroma_dir} ({e}); check the disk and its permissions, "
                f"then run {REINDEX}"
            ) from e

    def _discard(self, reason: str) -> None:
        """Set the embedded directory aside and mark every episode for re-indexing (one warning line)."""
        self._note(f"the Chroma index at {self.chroma_dir} is damaged ({reason}); rebuilding it from SQLite "
                   f"({self.store.count()} episodes)")
        self._drop_index()
        health.unseal(self.seal_path)
        health.discard(self.chroma_dir)
        self.store.reset_indexed()
        self._verified.clear()

    def _drop_index(self) -> None:
        index, self.index = self.index, None
        if index is None:
            return
        try:
            index.close()
        except BaseException as e:  # a broken client may fail to close; it is being thrown away anyway
            reraise_fatal(e)
            log.debug("closing a broken index client failed: %s", describe(e))

    def _note(self, line: str) -> None:
        self.healed.append(line)
        log.warning("%s", line)

    def _degrade(self, reason: str) -> None:
        self.degraded = reason
        self._drop_index()
        self.lease.release()
        log.warning("the Chroma index at %s cannot be used (%s); searching SQLite directly until %s succeeds",
                    self.location, reason, REINDEX)

    # ----- guarded calls and repairs -----
    def run(self, env: str | None, what: str, fn: Callable[[], T]) -> T:
        """``fn()`` against the index; on any failure heal and call it once more. ``NoIndex`` if hopeless."""
        if self.index is None:
            raise NoIndex(self.degraded or "not the owner")
        try:
            result = fn()
            self.unreachable = None
            return result
        except BaseException as e:
            reraise_fatal(e)
            self._unreachable(what, e)
            self.heal(env, f"{what} failed ({describe(e)})")
        try:
            return fn()
        except BaseException as e:
            reraise_fatal(e)
            self._unreachable(what, e)
            self._degrade(f"{what} still fails after a rebuild ({describe(e)})")
            raise NoIndex(self.degraded) from None

    def _unreachable(self, what: str, error: BaseException) -> None:
        """A server that does not answer is not a damaged index: say so once, answer from SQLite meanwhile."""
        if not unreachable(error):
            return
        if self.unreachable is None:
            log.warning("%s failed: the index at %s does not answer (%s); searching SQLite and keeping new "
                        "episodes pending until it does", what, self.location, describe(error))
        self.unreachable = describe(error)
        raise NoIndex(self.unreachable) from None

    def heal(self, env: str | None, reason: str) -> None:
        """Rebuild ``env``'s collection from SQLite; if that fails (or no env), the whole index."""
        if env is not None:
            self._note(f"the index of {env!r} at {self.location} is damaged ({reason}); rebuilding it from SQLite "
                       f"({self.store.count(env=env)} episodes)")
            try:
                self.rebuild_env(env)
                return
            except BaseException as e:
                reraise_fatal(e)
                reason = f"rebuilding {env!r} failed too ({describe(e)})"
        try:
            self.rebuild_all(reason)
        except BaseException as e:
            reraise_fatal(e)
            self._degrade(f"{reason}; rebuilding the whole index failed ({describe(e)})")
            raise NoIndex(self.degraded) from None

    def rebuild_env(self, env: str, progress: Progress | None = None) -> int:
        assert self.index is not None
        with self._lock:
            self.index.forget(env)
            self.index.drop(env)
            self.store.reset_indexed(env)
            n = self._catch_up(env, progress)
            self._verified.add(env)
            return n

    def rebuild_all(self, reason: str | None = None, progress: Progress | None = None) -> int:
        """A fresh index from SQLite: a new embedded directory, or this prefix's server collections dropped."""
        with self._lock:
            if self.url is None:
                if reason is not None:
                    self._discard(reason)
                else:
                    self._drop_index()
                    health.unseal(self.seal_path)
                    health.discard(self.chroma_dir)
                    self.store.reset_indexed()
                self.index = self._connect()
            else:
                assert self.index is not None
                if reason is not None:
                    self._note(f"the index at {self.url} is damaged ({reason}); rebuilding it from SQLite")
                for name in self.index.names():
                    self.index.client.delete_collection(name)
                self.index.forget()
                self.store.reset_indexed()
            self._verified.clear()
            n = 0
            for env in self.store.envs():
                n += self._catch_up(env, progress)
                self._verified.add(env)
            return n

    # ----- keeping up with SQLite -----
    def ensure(self, env: str, progress: Progress | None = None) -> int:
        """Verify ``env`` once per ownership, then index its pending rows; returns how many were indexed."""
        with self._lock:
            if env not in self._verified:
                problem = self.run(env, f"checking {env!r}", lambda: self.verify(env))
                if problem:
                    self.heal(env, problem)
                self._verified.add(env)
            if self.index is None or not self.store.count(env=env, unindexed_only=True):
                return 0
            return self.run(env, f"indexing {env!r}", lambda: self._catch_up(env, progress))

    def verify(self, env: str) -> str | None:
        """Compare ``env``'s collection with SQLite: None if it agrees, else what is wrong (one line)."""
        assert self.index is not None
        name = f"the collection of {env!r}"
        total, indexed = self.store.index_counts(env).get(env, (0, 0))
        in_index = self.index.count(env)
        check: dict[str, Any] = {"episodes": total, "indexed": indexed, "in_index": in_index, "sampled": 0}
        self.checks[env] = check
        if in_index < indexed:
            return f"{name} holds {in_index} vectors, SQLite marks {indexed} indexed"
        if in_index > total:
            return f"{name} holds {in_index} vectors for {total} episodes"
        sample = [(i, v) for i, v in self.store.sample_indexed(env, SAMPLE) if v is not None]
        if not sample:
            return None
        got = self.index.vectors(env, [i for i, _ in sample])
        check["sampled"] = len(sample)
        missing = sum(i not in got for i, _ in sample)
        if missing:
            return f"{missing} of {len(sample)} sampled episodes are missing from {name}"
        differ = sum(got[i].shape != v.shape or not np.allclose(got[i], v, atol=1e-4) for i, v in sample)
        if differ:
            return f"the vectors of {differ} of {len(sample)} sampled episodes differ from SQLite's"
        own_id, own_vector = sample[0]
        top = self.index.query(env, own_vector, 1)
        if not top or (top[0].id != own_id and top[0].score < 0.9999):
            return f"a search of {name} for a stored vector does not find it"
        check["vectors_match"] = True
        return None

    def embed_missing(self, env: str | None) -> None:
        """Give stored rows without a vector one (old rows, a failed embedding) before they are indexed."""
        for _ in range(1 + self.store.count(env=env) // PAGE):
            eps = self.store.without_vectors(PAGE, env=env)
            if not eps:
                return
            try:
                vectors = self.embedder.encode([ep.summary_text() for ep in eps])
            except Exception as e:  # the embedder, not the index: those rows wait for the next try
                log.warning("embedding %d episode(s) of %r failed (%s); they stay unindexed", len(eps), env,
                            describe(e))
                return
            self.store.set_vectors([ep.id for ep in eps], vectors)

    def _catch_up(self, env: str, progress: Progress | None = None) -> int:
        """Upsert ``env``'s pending rows from their stored vectors; returns how many."""
        assert self.index is not None
        self.embed_missing(env)
        n = 0
        for page in self.store.iter_pages(PAGE, unindexed_only=True, env=env):
            stored = self.store.vectors([ep.id for ep in page])
            page = [ep for ep in page if stored[ep.id][1] is not None]
            if not page:
                continue
            self.index.upsert(env, [ep.id for ep in page], np.stack([stored[ep.id][1] for ep in page]),
                              [metadata(ep) for ep in page])
            self.store.mark_indexed([ep.id for ep in page], [stored[ep.id][0] for ep in page])
            n += len(page)
            self.indexed += len(page)
            if progress:
                progress(len(page))
        return n

