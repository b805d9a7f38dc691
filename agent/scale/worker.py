"""The Ray worker: one policy, the episode graph without a library, one finished episode per call.

:class:`agent.scale.pool.WorkerPool` wraps :class:`EpisodeWorker` in ``ray.remote`` and starts it; nothing
here imports Ray, so the class can be exercised in-process too::

    worker = EpisodeWorker(WorkerSpec("python:tests.scripted:echo_policy"))
    result = await worker.run(job)        # EpisodeResult with the episode as JSON, nothing recorded

A load failure (bad model dir, unreachable server) is kept and reported by :meth:`ready` and by every
:meth:`run`, so the driver names it in one line instead of a remote traceback.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from agent.scale.jobs import EpisodeJob, EpisodeResult, WorkerSpec


def _actor_name() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_actor_name() or f"pid {os.getpid()}"
    except (ImportError, RuntimeError, AttributeError):
        return f"pid {os.getpid()}"


class EpisodeWorker:
    """Builds its policy from ``spec`` once, then runs episodes (``spec.concurrency`` at a time, by Ray)."""

    def __init__(self, spec: WorkerSpec) -> None:
        if not sys.stdout.isatty():  # Ray forwards a worker's stdout to the driver's, which may be a --json document
            sys.stdout = sys.stderr
        self.spec = spec
        self.policy: Any = None
        self.load_error: str | None = None
        self._graphs: dict[tuple[str, str, str], tuple[Any, int]] = {}
        try:
            from agent.policy import load_policy

            self.policy = load_policy(spec.model, adapter_path=spec.adapter_path, version=spec.version, **spec.options)
        except Exception as e:  # noqa: BLE001 - kept and reported by ready()/run(), never swallowed
            self.load_error = f"{type(e).__name__}: {e}"

    def ready(self) -> dict[str, Any]:
        """Whether the policy loaded (``error``), and where this worker runs."""
        return {"name": _actor_name(), "pid": os.getpid(), "error": self.load_error,
                "version": getattr(self.policy, "version", None)}

    def _graph(self, job: EpisodeJob) -> tuple[Any, int]:
        """The compiled graph for (environment, feedback, config), built once per worker."""
        key = (job.env, job.feedback, json.dumps(job.config, sort_keys=True))
        if key not in self._graphs:
            from agent.feedback import make_feedback_source
            from agent.graph import EpisodeConfig, GraphDeps, build_episode_graph, recursion_limit
            from environments import get_environment

            environment = get_environment(job.env)
            config = EpisodeConfig.model_validate({**job.config, "record": False})  # the driver records
            deps = GraphDeps(self.policy, environment, config, library=None,
                             feedback=make_feedback_source(job.feedback, environment))
            self._graphs[key] = (build_episode_graph(deps), recursion_limit(config))
        return self._graphs[key]

    async def run(self, job: EpisodeJob) -> EpisodeResult:
        """Run one episode to its end and return it; an exception becomes ``error`` (the driver reports it)."""
        if self.load_error is not None:
            return EpisodeResult(job.episode_id, error=f"worker could not load model {self.spec.model}: {self.load_error}",
                                 worker=_actor_name())
        from agent.graph import initial_state
        from environments import Task

        try:
            graph, limit = self._graph(job)
            state = initial_state(Task.model_validate(job.task), run_id=job.run_id, seed=job.seed,
                                  episode_id=job.episode_id, metadata=job.metadata, purpose=job.purpose)  # type: ignore[arg-type]
            state.update(hints=list(job.hints), retrieved_ids=list(job.retrieved_ids))
            final = await graph.ainvoke(state, config={"recursion_limit": limit})
        except Exception as e:  # noqa: BLE001 - returned to the driver, which reports it per episode
            return EpisodeResult(job.episode_id, error=f"{type(e).__name__}: {e}", worker=_actor_name())
        return EpisodeResult(job.episode_id, episode=final["episode"].model_dump(mode="json"), worker=_actor_name())

    async def aclose(self) -> None:
        if self.policy is not None:
            await self.policy.aclose()
