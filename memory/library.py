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
``get_run``/``runs``.

How the two stores stay consistent: ``record`` commits to SQLite first (row ``indexed = 0``), then
upserts into Chroma and sets ``indexed = 1``. If the upsert fails or the process dies in between, the
index is *behind*; ``sync`` (run by ``search`` and ``reindex``; ``stats`` reports it) finds it two ways —
rows with ``indexed = 0``, and a collection holding fewer vectors than SQLite says were indexed (a
deleted or corrupt Chroma directory) — and repairs from SQLite. Upserts are keyed by episode id, so a
repair never duplicates anything.

    python -c "from memory import ExperienceLibrary as L; print(L('.selfevolve').stats())"
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from memory.embed import Embedder, default_embedder
from memory.index import CollectionMissing, VectorIndex, where_filter
from memory.records import Episode, ModelVersion, Run, VersionStatus
from memory.store import Store

log = logging.getLogger(__name__)
Progress = Callable[[int], None]
PAGE = 512


CHROMA_URL_ENV = "SELFEVOLVE_CHROMA_URL"


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


def _metadata(ep: Episode) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "env": ep.env, "success": ep.success, "first_success": ep.first_success,
        "model_version": ep.model_version, "created_at": float(ep.created_at), "hint": ep.hint_text(),
        "task_id": ep.task.id, "split": ep.task.split,  # what retrieval's filters need, without a SQLite read
    }
    if ep.run_id:
        meta["run_id"] = ep.run_id
    return meta


def training_row(ep: Episode) -> dict[str, Any]:
    """Flat columns for a training dataset (one row per episode); ``episode_json`` keeps everything."""
    first = ep.attempts[0] if ep.attempts else None
    last = ep.attempts[-1] if ep.attempts else None
    reflect = next((a.reflect for a in ep.attempts if a.reflect is not None), None)
    retry = ep.attempts[1] if len(ep.attempts) > 1 else None
    return {
        "episode_id": ep.id, "env": ep.env, "task_id": ep.task.id, "split": ep.task.split,
        "question": ep.task.question, "prompt": ep.task.messages(),
        "reference": json.dumps(ep.task.reference), "model_version": ep.model_version, "run_id": ep.run_id or "",
        "first_messages": first.solve.messages if first else [], "first_output": first.solve.output if first else "",
        "first_answer": (first.answer or "") if first else "",
        "first_feedback": first.feedback.message if first else "",
        "first_reward": first.feedback.reward if first else 0.0,
        "first_success": ep.first_success, "success": ep.success, "recovered": ep.recovered,
        "reflection_messages": reflect.messages if reflect else [], "reflection": reflect.output if reflect else "",
        "retry_messages": retry.solve.messages if retry else [], "retry_output": retry.solve.output if retry else "",
        "final_answer": (last.answer or "") if last else "", "final_reward": last.feedback.reward if last else 0.0,
        "n_attempts": len(ep.attempts), "tokens": ep.tokens, "created_at": ep.created_at,
        "episode_json": ep.model_dump_json(),
    }


class ExperienceLibrary:
    """Every episode the agent lived through, searchable by meaning. See the module docstring."""

    def __init__(
        self, workspace: str | Path, chroma_url: str | None = None, *, embedder: Embedder | None = None,
        collection_prefix: str = "ep",
    ) -> None:
        self.workspace = Path(workspace)
        self.workspace.mkdir(parents=True, exist_ok=True)
        # One place decides where the index lives: an explicit URL, else $SELFEVOLVE_CHROMA_URL (a team's
        # shared Chroma server), else the embedded index in the workspace.
        chroma_url = chroma_url or os.environ.get(CHROMA_URL_ENV) or None
        self.store = Store(self.workspace / "experience.db")
        self.embedder = embedder or default_embedder()
        self.index = VectorIndex(
            path=None if chroma_url else self.workspace / "chroma", url=chroma_url, prefix=collection_prefix
        )
        self._verified: set[str] = set()  # envs whose collection count was checked against SQLite
        self._sync_lock = threading.Lock()
        self.last_index_error: str | None = None
        self._closed = False

    # ----- writing -----
    def record(self, episode: Episode) -> str:
        """Store ``episode`` (atomic, idempotent by id), then index it. Returns its id."""
        self.record_many([episode])
        return episode.id

    def record_many(self, episodes: list[Episode]) -> int:
        """Store several episodes in one transaction, then index them in one embedding batch."""
        if not episodes:
            return 0
        self.store.put_episodes(episodes)
        try:
            self._index(episodes)
        except Exception as e:  # the index is optional: SQLite has the data, sync() repairs later
            self.last_index_error = f"{type(e).__name__}: {e}"
            self._verified.difference_update({ep.env for ep in episodes})
            self.index.forget()
            log.warning(
                "indexing %d episode(s) failed (%s); they are saved, and the index will catch up on the next "
                "search or `selfevolve memory reindex`", len(episodes), self.last_index_error,
            )
        return len(episodes)

    def _index(self, episodes: list[Episode]) -> None:
        by_env: dict[str, list[Episode]] = {}
        for ep in episodes:
            by_env.setdefault(ep.env, []).append(ep)
        for env, eps in by_env.items():
            vectors = self.embedder.encode([ep.summary_text() for ep in eps])
            self.index.upsert(env, [ep.id for ep in eps], vectors, [_metadata(ep) for ep in eps])
            self.store.mark_indexed([ep.id for ep in eps])

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
        """Bring the index up to date with SQLite; returns how many episodes were (re)indexed."""
        envs = [env] if env is not None else self.store.envs()
        done = 0
        with self._sync_lock:
            for name in envs:
                if name not in self._verified:  # once per process and env: a full count of both sides
                    total, indexed = self.store.index_counts(name).get(name, (0, 0))
                    in_index = self.index.count(name)
                    if in_index < indexed or in_index > total:
                        log.warning("index of %r holds %d vectors, SQLite %d: rebuilding it", name, in_index, total)
                        self.store.reset_indexed(name)
                        self.index.drop(name)
                if self.store.count(env=name, unindexed_only=True):  # an index lookup: cheap every search
                    for page in self.store.iter_pages(PAGE, unindexed_only=True, env=name):
                        self._index(page)
                        done += len(page)
                        if progress:
                            progress(len(page))
                self._verified.add(name)
        return done

    def reindex(self, env: str | None = None, progress: Progress | None = None) -> int:
        """Drop and rebuild the index (of one env) from SQLite; returns the number of episodes indexed."""
        envs = [env] if env is not None else self.store.envs()
        with self._sync_lock:
            for name in envs:
                self.store.reset_indexed(name)
                self.index.drop(name)
                self._verified.discard(name)
        return self.sync(env, progress=progress)

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
            self.sync(name)
        vector = self.embedder.encode([text])[0]
        return self.search_vector(vector, env, success, k, model_version, first_success=first_success, since=since)

    def search_vector(
        self, vector: np.ndarray, env: str | None = None, success: bool | None = None, k: int = 5,
        model_version: str | None = None, *, first_success: bool | None = None, since: float | None = None,
    ) -> list[SearchHit]:
        """Like :meth:`search` with a precomputed unit vector, and no repair pass."""
        envs = [env] if env is not None else self.store.envs()
        where = where_filter(success=success, first_success=first_success, model_version=model_version, since=since)
        matches = []
        for name in envs:
            try:
                matches.extend(self.index.query(name, vector, k, where))
            except CollectionMissing:
                if self.store.count(env=name) == 0:
                    continue
                log.warning("the index has no collection for %r: rebuilding it from SQLite", name)
                self.reindex(name)
                matches.extend(self.index.query(name, vector, k, where))
            except Exception as e:  # a broken collection: rebuild it from SQLite, then ask once more
                log.warning("searching the index of %r failed (%s); rebuilding it from SQLite", name, e)
                self.index.forget(name)
                self.reindex(name)
                matches.extend(self.index.query(name, vector, k, where))
        matches.sort(key=lambda m: -m.score)
        return [
            SearchHit(
                episode_id=m.id, score=m.score, env=str(m.metadata.get("env", "")),
                success=bool(m.metadata.get("success")), first_success=bool(m.metadata.get("first_success")),
                model_version=str(m.metadata.get("model_version", "")), hint=str(m.metadata.get("hint", "")),
                created_at=float(m.metadata.get("created_at", 0.0)), task_id=str(m.metadata.get("task_id", "")),
                split=str(m.metadata.get("split", "")),
            )
            for m in matches[:k]
        ]

    # ----- reports -----
    def index_status(self) -> dict[str, Any]:
        """Per env: episodes in SQLite, vectors in the index, and how far behind the index is."""
        envs: dict[str, Any] = {}
        behind_total = 0
        try:
            for env, (total, indexed) in self.store.index_counts().items():
                in_index = self.index.count(env)
                behind = max(0, total - min(indexed, in_index))
                behind_total += behind
                envs[env] = {"episodes": total, "indexed": indexed, "in_index": in_index, "behind": behind}
        except Exception as e:  # report an unreachable index, do not crash stats
            return {"location": self.index.location, "status": f"unavailable: {e}", "behind": None, "envs": envs}
        status = "in sync" if behind_total == 0 else f"behind by {behind_total}"
        return {"location": self.index.location, "status": status, "behind": behind_total, "envs": envs}

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
        path = Path(path)
        if format == "jsonl":
            path.parent.mkdir(parents=True, exist_ok=True)
            n = 0
            tmp = path.with_name(path.name + ".partial")
            with tmp.open("w", encoding="utf-8") as f:
                for page in self.store.iter_pages(PAGE, **filters):
                    f.writelines(ep.model_dump_json() + "\n" for ep in page)
                    n += len(page)
                    if progress:
                        progress(len(page))
            tmp.replace(path)
            return n
        if format == "hf":
            return self._export_hf(path, self.store.iter_pages(PAGE, **filters), progress)
        raise ValueError(f"unknown export format {format!r}: use 'jsonl' or 'hf'")

    @staticmethod
    def _export_hf(path: Path, pages: Iterable[list[Episode]], progress: Progress | None) -> int:
        import datasets

        parts = []
        for page in pages:
            parts.append(datasets.Dataset.from_list([training_row(ep) for ep in page]))
            if progress:
                progress(len(page))
        if not parts:
            raise ValueError("no episodes match the filters: nothing to export")
        dataset = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
        dataset.save_to_disk(str(path))
        return len(dataset)

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
        """Release the SQLite connection and the Chroma client (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.index.close()
        self.store.close()

    def __enter__(self) -> ExperienceLibrary:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
