"""The driver: plan episodes, send them to the pool's workers, record each result once, retry dead workers.

    episodes, summary = await collect_on_ray(pool, [(env, tasks)], EpisodeConfig(), library=lib, run_id=run.id)

Same inputs and outputs as :func:`agent.cycle.collect` (and a :class:`agent.runner.RunSummary` with the
same fields), so the CLI, the daemon and the benchmark switch between them with one branch. How
exactly-once and retrieval work is in :mod:`agent.scale`'s docstring; in short:

- the episode id is fixed per task before the first try (:func:`plan_jobs`); retries reuse it;
- only the driver records, only results that reached it, and an id it recorded is never recorded again;
- a dead worker (:data:`_RETRYABLE`) is replaced and the task resubmitted, at most ``max_retries`` times,
  then reported as an error with the first failure's reason (retries never hide the first error).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.graph import EpisodeConfig
from agent.runner import EpisodeError, RunSummary, summarize
from agent.scale.cluster import require_ray
from agent.scale.jobs import EpisodeJob, EpisodeResult
from agent.scale.pool import Member, WorkerPool
from environments import Environment, Task
from memory.protocol import Library
from memory.records import Episode, Purpose, new_id

log = logging.getLogger(__name__)

DEFAULT_MAX_RETRIES = 3
OnEpisode = Callable[[Episode | None, EpisodeError | None], None]


def _retryable() -> tuple[type[BaseException], ...]:
    """Ray errors that mean the worker (or its node) is gone, not that the episode failed."""
    x = require_ray().exceptions
    return (x.RayActorError, x.WorkerCrashedError, x.NodeDiedError, x.ObjectLostError, x.OutOfMemoryError)


@dataclass
class _Slot:
    index: int  # position in the plan: episodes come back in plan order
    job: EpisodeJob
    task_id: str
    failures: list[str] = field(default_factory=list)  # why each try's worker died
    hinted: bool = False
    done: bool = False


def plan_jobs(plan: Sequence[tuple[Environment, Sequence[Task]]], config: EpisodeConfig, *, feedback: str = "verifier",
              run_id: str | None = None, seed: int | None = None, metadata: dict[str, Any] | None = None,
              purpose: Purpose = "train") -> list[EpisodeJob]:
    """One job per task, each with its episode id fixed now. Task ``i`` of an environment gets seed
    ``seed + i``, as :func:`agent.runner.run_episodes` gives it, so seeded runs match in-process ones."""
    cfg = config.model_dump(mode="json")
    return [EpisodeJob(episode_id=new_id("ep"), env=environment.spec, task=task.model_dump(mode="json"), config=cfg,
                       feedback=feedback, run_id=run_id, seed=None if seed is None else seed + i, purpose=purpose,
                       metadata=dict(metadata or {}))
            for environment, tasks in plan for i, task in enumerate(tasks)]


class RayDriver:
    """Runs a list of jobs on a started pool; one driver per collection (see the module docstring)."""

    def __init__(self, pool: WorkerPool, config: EpisodeConfig, *, library: Library | None = None,
                 max_retries: int = DEFAULT_MAX_RETRIES, on_episode: OnEpisode | None = None) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.pool, self.config, self.library = pool, config, library
        self.max_retries, self.on_episode = max_retries, on_episode
        self.results: list[Episode | None] = []
        self.errors: list[EpisodeError] = []
        self.recorded: set[str] = set()

    async def run(self, jobs: list[EpisodeJob]) -> list[Episode]:
        """Run every job to a recorded episode or a reported error; the episodes, in job order."""
        slots = deque(_Slot(i, job, job.task["id"]) for i, job in enumerate(jobs))
        self.results = [None] * len(jobs)
        inflight: dict[asyncio.Future, tuple[_Slot, Member]] = {}
        while slots or inflight:
            while slots and (member := self.pool.acquire()) is not None:
                slot = slots.popleft()
                inflight[await self._submit(slot, member)] = (slot, member)
            if not inflight:  # our bug: work left and no worker to take it
                raise RuntimeError(f"the Ray pool has no worker with room ({len(self.pool.members)} workers)")
            finished, _ = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
            for fut in finished:
                slot, member = inflight.pop(fut)
                self.pool.release(member)
                if await self._settle(slot, member, fut):
                    slots.appendleft(slot)  # resubmitted before new work: its retry budget is the one running
        return [e for e in self.results if e is not None]

    async def _submit(self, slot: _Slot, member: Member) -> asyncio.Future:
        """Choose the hints once (the first try), then send the job; an asyncio future of its result."""
        if not slot.hinted:
            slot.hinted = True
            if self.library is not None and self.config.retrieval and self.config.k > 0:
                from agent.nodes import find_hints

                task = Task.model_validate(slot.job.task)
                found = await asyncio.to_thread(find_hints, self.config, self.library, task)
                slot.job.hints, slot.job.retrieved_ids = found["hints"], found["retrieved_ids"]
        return asyncio.wrap_future(self.pool.submit(member, slot.job).future())

    async def _settle(self, slot: _Slot, member: Member, fut: asyncio.Future) -> bool:
        """Handle one finished try; True if the slot goes back in the queue (its worker died)."""
        error = fut.exception()
        if error is None:
            await self._accept(slot, fut.result())
            return False
        if not isinstance(error, _retryable()):  # the worker raised outside the graph: our bug, reported
            self._fail(slot, f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
            return False
        slot.failures.append(f"{type(error).__name__} on {member.name}")
        self.pool.replace(member)
        if len(slot.failures) > self.max_retries:
            self.pool.stats.exhausted += 1
            self._fail(slot, f"its Ray worker died {len(slot.failures)} times (max_retries={self.max_retries}); "
                             f"first: {slot.failures[0]}")
            return False
        self.pool.stats.resubmitted += 1
        log.warning("task %s: worker %s died mid-episode; resubmitting (retry %d of %d)", slot.task_id, member.name,
                    len(slot.failures), self.max_retries)
        return True

    async def _accept(self, slot: _Slot, result: EpisodeResult) -> None:
        """Record a finished episode once: a second result for a recorded id is counted and ignored."""
        if result.error is not None:
            self._fail(slot, result.error)
            return
        if result.episode_id in self.recorded or slot.done:
            self.pool.stats.duplicates += 1
            log.warning("episode %s arrived again (from %s); it is recorded once", result.episode_id, result.worker)
            return
        if result.episode_id != slot.job.episode_id:
            raise RuntimeError(f"worker {result.worker} returned episode {result.episode_id} for job "
                               f"{slot.job.episode_id}")  # our bug: never record under the wrong id
        episode = Episode.model_validate(result.episode)
        self.recorded.add(episode.id)  # before the await: a second arrival meanwhile is a duplicate
        slot.done = True
        if self.library is not None and self.config.record:
            try:  # SQLite + embedding + index upsert, off the loop (the record node does the same)
                await asyncio.to_thread(self.library.record, episode)
            except Exception as e:  # noqa: BLE001 - reported per episode, as a failing record node would be
                self.recorded.discard(episode.id)
                self._fail(slot, f"recording failed: {type(e).__name__}: {e}")
                return
        self.results[slot.index] = episode
        if self.on_episode:
            self.on_episode(episode, None)

    def _fail(self, slot: _Slot, message: str) -> None:
        slot.done = True
        err = EpisodeError(slot.task_id, message)
        self.errors.append(err)
        if self.on_episode:
            self.on_episode(None, err)


async def collect_on_ray(
    pool: WorkerPool,
    plan: Sequence[tuple[Environment, Sequence[Task]]],
    config: EpisodeConfig,
    *,
    library: Library | None = None,
    feedback: str = "verifier",
    run_id: str | None = None,
    seed: int | None = None,
    metadata: dict[str, Any] | None = None,
    purpose: Purpose = "train",
    on_episode: OnEpisode | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
) -> tuple[list[Episode], RunSummary]:
    """Run the planned tasks on ``pool``'s workers, each recorded once in ``library`` by this process.

    Errors (an episode that raised, a task whose workers kept dying) are in the summary, as in
    :func:`agent.runner.run_episodes`; the caller decides what a run with errors means."""
    jobs = plan_jobs(plan, config, feedback=feedback, run_id=run_id, seed=seed, metadata=metadata, purpose=purpose)
    driver = RayDriver(pool, config, library=library, max_retries=max_retries, on_episode=on_episode)
    start = time.perf_counter()
    episodes = await driver.run(jobs)
    return episodes, summarize(episodes, driver.errors, time.perf_counter() - start)
