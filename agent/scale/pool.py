"""A fixed-size pool of :class:`agent.scale.worker.EpisodeWorker` actors, and their replacement when one dies.

    pool = WorkerPool(WorkerSpec("default"), workers=2).start()   # waits until every worker loaded its model
    ...                                                            # agent.scale.driver submits to it
    pool.close()

Ray's own actor restarts and task retries are off (``max_restarts=0``): they would re-run a task behind
the driver's back. The driver decides: it calls :meth:`replace` for a dead worker and resubmits.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from agent.scale.cluster import check_capacity, require_ray
from agent.scale.jobs import EpisodeJob, PoolStats, WorkerSpec
from agent.scale.worker import EpisodeWorker

log = logging.getLogger(__name__)

START_TIMEOUT_S = 900.0


class WorkerStartError(RuntimeError):
    """A worker could not load its policy, or the cluster did not start it; the message says which."""


@dataclass(eq=False)
class Member:
    """One worker of the pool and the episodes it has in flight."""

    name: str
    handle: Any
    load: int = 0


class WorkerPool:
    """``workers`` actors built from ``spec``; see the module docstring."""

    def __init__(self, spec: WorkerSpec, workers: int, *, start_timeout_s: float = START_TIMEOUT_S) -> None:
        if workers < 1:
            raise ValueError(f"a Ray pool needs at least 1 worker, got {workers}")
        ray = require_ray()
        self.spec, self.size, self.start_timeout_s = spec, workers, start_timeout_s
        self.members: list[Member] = []
        self.stats = PoolStats()
        self._actor = ray.remote(EpisodeWorker)
        self._prefix = f"selfevolve-worker-{uuid.uuid4().hex[:6]}"
        self._count = itertools.count()

    @property
    def capacity(self) -> int:
        return self.size * self.spec.concurrency

    def _spawn(self) -> Member:
        name = f"{self._prefix}-{next(self._count)}"
        handle = self._actor.options(
            name=name, num_cpus=self.spec.num_cpus, num_gpus=self.spec.num_gpus, max_restarts=0,
            max_task_retries=0, max_concurrency=self.spec.concurrency,
        ).remote(self.spec)
        member = Member(name, handle)
        self.members.append(member)
        return member

    def start(self) -> WorkerPool:
        """Start every worker and wait until each has loaded its policy (WorkerStartError if one cannot)."""
        ray = require_ray()
        check_capacity(self.size, self.spec.num_cpus, self.spec.num_gpus)
        fresh = [self._spawn() for _ in range(self.size)]
        try:
            reports = ray.get([m.handle.ready.remote() for m in fresh], timeout=self.start_timeout_s)
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise WorkerStartError(f"the Ray workers did not start within {self.start_timeout_s:.0f} s: check "
                                   "`ray status` for free resources, or pass fewer --ray-workers") from None
        except ray.exceptions.RayError as e:
            self.close()
            raise WorkerStartError(f"a Ray worker died while starting: {str(e).splitlines()[0]}") from None
        failed = [r for r in reports if r["error"]]
        if failed:
            self.close()
            raise WorkerStartError(f"Ray worker could not load model {self.spec.model}: {failed[0]['error']}")
        log.info("started %d Ray worker(s): %s", len(fresh), ", ".join(r["name"] for r in reports))
        return self

    def acquire(self) -> Member | None:
        """The least loaded worker with room for one more episode (its load counted), or None."""
        free = [m for m in self.members if m.load < self.spec.concurrency]
        if not free:
            return None
        member = min(free, key=lambda m: m.load)
        member.load += 1
        return member

    def submit(self, member: Member, job: EpisodeJob) -> Any:
        """Start ``job`` on ``member``; returns the Ray ObjectRef of its :class:`EpisodeResult`."""
        return member.handle.run.remote(job)

    def release(self, member: Member) -> None:
        member.load = max(0, member.load - 1)

    def replace(self, member: Member) -> None:
        """Kill a worker that failed (if it is still ours) and start another; its first call shows whether
        the new one loaded (no wait here, so the other workers' results keep flowing)."""
        if member not in self.members:
            return  # already replaced, when another of its episodes failed first
        self.members.remove(member)
        self._kill(member)
        new = self._spawn()
        self.stats.restarts += 1
        log.warning("Ray worker %s died; started %s in its place", member.name, new.name)

    def _kill(self, member: Member) -> None:
        ray = require_ray()
        try:
            ray.kill(member.handle, no_restart=True)
        except (ValueError, ray.exceptions.RayError) as e:  # already gone: nothing left to stop
            log.debug("kill %s: %s", member.name, e)

    def close(self) -> None:
        """Stop every worker (a pool is not usable afterwards)."""
        for member in self.members:
            self._kill(member)
        self.members.clear()

    def __enter__(self) -> WorkerPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
