"""ExperienceLibrary: the one Python API over the experience store (SQLite truth + Chroma index).

CONTRACT (other packages code against these signatures):

    lib = ExperienceLibrary(workspace)            # <workspace>/experience.db, <workspace>/chroma/
    lib = ExperienceLibrary(workspace, chroma_url="http://127.0.0.1:8000")   # shared Chroma server
    lib.record(episode)                            # atomic, idempotent by episode.id; indexes it
    lib.get(episode_id) -> Episode                 # KeyError with a clear message if unknown
    lib.episodes(env=None, success=None, first_success=None, model_version=None,
                 run_id=None, since=None, limit=None) -> list[Episode]   # oldest first
    lib.count(**same filters) -> int
    lib.search(text, env=None, success=None, k=5, model_version=None) -> list[SearchHit]
    lib.stats(env=None) -> dict                    # episodes, first-try / final accuracy per env & version, ...
    lib.export(path, format="jsonl" | "hf", **filters) -> int
    lib.reindex(env=None) -> int                   # rebuild Chroma from SQLite
    lib.start_run(run) / lib.finish_run(run_id, summary)
    lib.add_model_version(mv) / lib.get_model_version(id) / lib.list_model_versions()
    lib.set_model_status(id, status, note="") / lib.serving_version() -> ModelVersion
    lib.close()  (also a context manager)

Extras: ``record_many(episodes)`` (one transaction, one embedding batch), ``iter_episodes(...)``
(paged, for 100k+), ``search_vector(vector, ...)``, ``sync(env=None)`` (repair the index now),
``get_run``/``runs``, ``owns_index``.

How the two stores stay consistent: ``record`` embeds the episode, commits it WITH its vector to SQLite
(row ``indexed = 0``), then upserts it into Chroma and sets ``indexed = 1``. If the upsert fails, the
process dies in between, or another process owns the index, the row stays pending and the index owner
catches it up from the stored vector. The index side — one owner per workspace, checks that survive a
native crash, rebuilds from SQLite — is :mod:`memory.keeper`; ``stats`` verifies the index against
SQLite (count, sampled ids and vectors, a search) instead of trusting a flag.

Several processes on one workspace (a daemon, a ``selfevolve run``, ``memory search``): all of them
read and write SQLite (WAL, 30 s busy timeout); the one holding ``<workspace>/index.lock`` owns the
Chroma index, the others search the stored vectors exactly and leave their new rows to the owner.

    python -c "from memory import ExperienceLibrary as L; print(L('.selfevolve').stats())"
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from memory.embed import Embedder, default_embedder
from memory.export import training_row, write_hf, write_jsonl
from memory.index import Match, VectorIndex
from memory.keeper import IndexBusy, IndexKeeper
from memory.records import Episode, ModelVersion, Run, VersionStatus
from memory.repair import describe, metadata
from memory.store import Store

log = logging.getLogger(__name__)
Progress = Callable[[int], None]
PAGE = 512
CHROMA_URL_ENV = "SELFEVOLVE_CHROMA_URL"

__all__ = ["CHROMA_URL_ENV", "ExperienceLibrary", "IndexBusy", "SearchHit", "training_row"]


@dataclass(frozen=True)
class SearchHit:
    """One retrieved experience; ``score`` is the cosine similarity of the query and its summary."""

    episode_id: str
    score: float
    env: str
    success: bool
    first_success: bool
    model_version: str
    hint: str
    created_at: float
    task_id: str = ""  # "" for vectors indexed before the metadata carried it (read the episode instead)
    split: str = ""

    @property
    def text(self) -> str:
        return self.hint

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_metadata(cls, episode_id: str, score: float, meta: dict[str, Any]) -> SearchHit:
        return cls(
            episode_id=episode_id, score=score, env=str(meta.get("env", "")), success=bool(meta.get("success")),
            first_success=bool(meta.get("first_success")), model_version=str(meta.get("model_version", "")),
            hint=str(meta.get("hint", "")), created_at=float(meta.get("created_at", 0.0)),
            task_id=str(meta.get("task_id", "")), split=str(meta.get("split", "")),
        )


class ExperienceLibrary:
    """Every episode the agent lived through, searchable by meaning. See the module docstring."""

    def __init__(
        self, workspace: str | Path, chroma_url: str | None = None, *, embedder: Embedder | None = None,
        collection_prefix: str = "ep", probe_timeout_s: float = 120.0,
    ) -> None:
        self.workspace = Path(workspace)
        self.workspace.mkdir(parents=True, exist_ok=True)
        # One place decides where the index lives: an explicit URL, else $SELFEVOLVE_CHROMA_URL (a team's
        # shared Chroma server), else the embedded index in the workspace.
        chroma_url = chroma_url or os.environ.get(CHROMA_URL_ENV) or None
        self.store = Store(self.workspace / "experience.db")
        self.embedder = embedder or default_embedder()
        self._closed = False
        try:
            self.keeper = IndexKeeper(self.workspace, self.store, self.embedder, chroma_url, collection_prefix,
                                      probe_timeout_s=probe_timeout_s)
        except BaseException:
            self.store.close()
            raise

    @property
    def index(self) -> VectorIndex | None:
        """The Chroma index, if this process owns it (else ``None``: searches read SQLite's vectors)."""
        return self.keeper.index

    @property
    def owns_index(self) -> bool:
        return self.keeper.owner

    @property
    def last_index_error(self) -> str | None:
        return self.keeper.last_error

    # ----- writing -----
    def record(self, episode: Episode) -> str:
        """Store ``episode`` (atomic, idempotent by id), then index it. Returns its id."""
        self.record_many([episode])
        return episode.id

    def record_many(self, episodes: list[Episode]) -> int:
        """Store several episodes in one transaction with their vectors, then index them."""
        if not episodes:
            return 0
        try:
            vectors: np.ndarray | None = self.embedder.encode([ep.summary_text() for ep in episodes])
        except Exception as e:  # the embedder failed: keep the episodes, embed them when indexing catches up
            vectors = None
            self.keeper.last_error = describe(e)
            log.warning("embedding %d episode(s) failed (%s); they are saved and get indexed later",
                        len(episodes), self.keeper.last_error)
        seqs = self.store.put_episodes(episodes, vectors)
        if vectors is not None:
            self.keeper.index_new(episodes, vectors, seqs)
        return len(episodes)

    # ----- reading -----
    def get(self, episode_id: str) -> Episode:
        return self.store.get_episode(episode_id)

    def episodes(
        self, env: str | None = None, success: bool | None = None, first_success: bool | None = None,
        model_version: str | None = None, run_id: str | None = None, since: float | None = None,
        limit: int | None = None,
    ) -> list[Episode]:
        """Episodes matching every given filter, oldest first (``since``: a Unix time, inclusive)."""
        return list(self.store.iter_episodes(
            limit=limit, env=env, success=success, first_success=first_success, model_version=model_version,
            run_id=run_id, since=since,
        ))

    def iter_episodes(self, page_size: int = PAGE, **filters: Any) -> Iterator[Episode]:
        """Like :meth:`episodes`, read lazily in pages (for 100k+ episodes)."""
        return self.store.iter_episodes(page_size=page_size, **filters)

    def count(
        self, env: str | None = None, success: bool | None = None, first_success: bool | None = None,
        model_version: str | None = None, run_id: str | None = None, since: float | None = None,
    ) -> int:
        return self.store.count(
            env=env, success=success, first_success=first_success, model_version=model_version,
            run_id=run_id, since=since,
        )

    # ----- the index -----
    def sync(self, env: str | None = None, progress: Progress | None = None) -> int:
        """Bring the index up to date with SQLite (owner only); returns how many episodes were (re)indexed."""
        return self.keeper.sync(env, progress)

    def reindex(self, env: str | None = None, progress: Progress | None = None, *, wait_s: float = 30.0,
                reembed: bool = False) -> int:
        """Drop and rebuild the index (of one env) from SQLite's vectors (``reembed``: embed again first);
        waits up to ``wait_s`` for another owner to finish (:class:`IndexBusy` after that)."""
        if reembed:
            if not self.keeper.try_own(force=True, wait_s=wait_s):
                return self.keeper.reindex(env, progress, wait_s=0)  # raises IndexBusy naming the owner
            self.store.clear_vectors(env)
        return self.keeper.reindex(env, progress, wait_s=wait_s)

    def search(
        self, text: str, env: str | None = None, success: bool | None = None, k: int = 5,
        model_version: str | None = None, *, first_success: bool | None = None, since: float | None = None,
    ) -> list[SearchHit]:
        """The ``k`` recorded episodes most similar to ``text``, best first (one env, or all merged)."""
        envs = [env] if env is not None else self.store.envs()
        envs = [e for e in envs if self.store.has_env(e)]
        if not envs:
            return []
        for name in envs:
            self.keeper.sync(name)
        vector = self.embedder.encode([text])[0]
        return self.search_vector(vector, env, success, k, model_version, first_success=first_success, since=since)

    def search_vector(
        self, vector: np.ndarray, env: str | None = None, success: bool | None = None, k: int = 5,
        model_version: str | None = None, *, first_success: bool | None = None, since: float | None = None,
    ) -> list[SearchHit]:
        """Like :meth:`search` with a precomputed unit vector, and no catch-up pass first."""
        envs = [env] if env is not None else self.store.envs()
        found = self.keeper.query(vector, envs, k, success=success, first_success=first_success,
                                  model_version=model_version, since=since)
        hits = [SearchHit.from_metadata(m.id, m.score, m.metadata) for m in found if isinstance(m, Match)]
        pairs = [m for m in found if not isinstance(m, Match)]
        if pairs:  # from SQLite's vectors: the hit's fields come from the episode itself
            eps = self.store.get_episodes([i for i, _ in pairs])
            hits = [SearchHit.from_metadata(i, score, metadata(eps[i])) for i, score in pairs if i in eps]
        return hits

    # ----- reports -----
    def index_status(self) -> dict[str, Any]:
        """Per env: episodes in SQLite, vectors in the index (verified now), how far behind it is."""
        return self.keeper.status()

    def self_reward_agreement(self, env: str | None = None) -> dict[str, dict[str, dict[str, Any]]]:
        """The generation–verification gap: ``{feedback_source: {model_version: row}}`` over attempts that
        carry a hidden ground truth (self-reward sources record one when the environment has a verifier).

        ``row``: ``attempts`` (with ground truth), ``agreement`` (share where ``feedback.success`` equals
        ``ground_truth.success``), ``false_positive_rate`` (share the self-reward called a success that the
        verifier failed — SRT's reward hacking), ``mean_self_reward`` and ``mean_true_reward``. Sources or
        versions with no ground truth are left out; empty dict when there is none.
        """
        sums: dict[str, dict[str, list[float]]] = {}
        for source in self.store.feedback_sources(env=env):
            if source == "verifier":
                continue
            for ep in self.store.iter_episodes(env=env, feedback_source=source):
                for a in ep.attempts:
                    if a.ground_truth is None:
                        continue
                    row = sums.setdefault(source, {}).setdefault(ep.model_version, [0, 0, 0, 0.0, 0.0])
                    row[0] += 1
                    row[1] += a.feedback.success == a.ground_truth.success
                    row[2] += a.feedback.success and not a.ground_truth.success
                    row[3] += a.feedback.reward
                    row[4] += a.ground_truth.reward
        return {
            source: {
                version: {"attempts": int(n), "agreement": agree / n, "false_positive_rate": fp / n,
                          "mean_self_reward": r_self / n, "mean_true_reward": r_true / n}
                for version, (n, agree, fp, r_self, r_true) in by_version.items()
            }
            for source, by_version in sums.items()
        }

    def stats(self, env: str | None = None) -> dict[str, Any]:
        by_env = self.store.aggregate("env", env=env)
        n = sum(v["episodes"] for v in by_env.values())
        index = self.index_status()
        if env is not None:
            index["envs"] = {k: v for k, v in index["envs"].items() if k == env}
        return {
            "workspace": str(self.workspace), "episodes": n,
            "first_try_accuracy": sum(v["first_successes"] for v in by_env.values()) / n if n else 0.0,
            "final_accuracy": sum(v["successes"] for v in by_env.values()) / n if n else 0.0,
            "recovered": sum(v["recovered"] for v in by_env.values()),
            "tokens": sum(v["tokens"] for v in by_env.values()),
            "envs": by_env, "model_versions": self.store.aggregate("model_version", env=env), "index": index,
            "runs": len(self.store.list_runs()), "self_reward": self.self_reward_agreement(env=env),
        }

    def export(
        self, path: str | Path, format: Literal["jsonl", "hf"] = "jsonl", progress: Progress | None = None,
        **filters: Any,
    ) -> int:
        """Write matching episodes: ``jsonl`` (one Episode JSON a line) or ``hf`` (``datasets`` on disk)."""
        if format == "jsonl":
            return write_jsonl(Path(path), self.store.iter_pages(PAGE, **filters), progress)
        if format == "hf":
            return write_hf(Path(path), self.store.iter_pages(PAGE, **filters), progress)
        raise ValueError(f"unknown export format {format!r}: use 'jsonl' or 'hf'")

    # ----- runs -----
    def start_run(self, run: Run) -> Run:
        self.store.put_run(run)
        return run

    def finish_run(self, run_id: str, summary: dict[str, Any] | None = None) -> Run:
        run = self.store.get_run(run_id).model_copy(update={"finished_at": time.time(), "summary": summary or {}})
        self.store.put_run(run)
        return run

    def get_run(self, run_id: str) -> Run:
        return self.store.get_run(run_id)

    def runs(self) -> list[Run]:
        return self.store.list_runs()

    # ----- model versions -----
    def _ensure_base(self) -> ModelVersion:
        base = self.store.get_model_version("base")
        if base is None:
            base = ModelVersion(id="base", status="base", method="base", created_at=0.0)
            self.store.put_model_version(base, status_changed_at=0.0)
        return base

    def add_model_version(self, mv: ModelVersion) -> ModelVersion:
        """Register (or replace) a model version."""
        self._ensure_base()
        self.store.put_model_version(mv)
        return mv

    def get_model_version(self, version_id: str) -> ModelVersion:
        if version_id == "base":
            return self._ensure_base()
        mv = self.store.get_model_version(version_id)
        if mv is None:
            known = ", ".join(v.id for v in self.list_model_versions())
            raise KeyError(f"no model version {version_id!r}; known: {known} (see `selfevolve models list`)")
        return mv

    def list_model_versions(self) -> list[ModelVersion]:
        self._ensure_base()
        return self.store.list_model_versions()

    def set_model_status(self, version_id: str, status: VersionStatus, note: str = "") -> ModelVersion:
        mv = self.get_model_version(version_id)
        updated = mv.model_copy(update={"status": status, "note": note or mv.note})
        ModelVersion.model_validate(updated.model_dump())  # reject a status outside VersionStatus
        self.store.put_model_version(updated)
        return updated

    def serving_version(self) -> ModelVersion:
        """The most recently promoted version, else the base."""
        promoted = self.store.list_model_versions(status="promoted")
        return promoted[-1] if promoted else self._ensure_base()

    # ----- lifetime -----
    def close(self) -> None:
        """Index what is pending (if this process can own the index), seal it, release it and the SQLite
        connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.keeper.close()
        finally:
            self.store.close()

    def __enter__(self) -> ExperienceLibrary:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
