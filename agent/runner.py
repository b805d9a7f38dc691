"""Run many episodes concurrently through one policy (whose micro-batcher merges their requests).

An episode that raises (a backend error, a bug) is not swallowed: its error is kept in the summary
with the task id, the run goes on, and the caller decides (the CLI exits non-zero if any failed and
raises when every one did). Episodes are recorded by the graph's record node as each finishes, so a
crash mid-run loses only the episodes in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from agent.graph import EpisodeConfig, GraphDeps, build_episode_graph, initial_state, recursion_limit
from environments import Task
from memory.records import Episode, Purpose

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver


@dataclass
class EpisodeError:
    task_id: str
    error: str


@dataclass
class RunSummary:
    episodes: int
    first_try_accuracy: float
    final_accuracy: float
    recovered_by_retry: int
    mean_attempts: float
    retried: int  # episodes whose first attempt failed and that got a retry
    retrieval_hits: int  # episodes shown at least one past success as a hint
    critique_agreement: float | None
    tokens: int
    completion_tokens: int
    seconds: float
    episodes_per_second: float
    completion_tokens_per_second: float
    errors: list[EpisodeError] = field(default_factory=list)
    episode_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(episodes: list[Episode], errors: list[EpisodeError], seconds: float) -> RunSummary:
    n = len(episodes)
    verdicts = [
        (a.critique_verdict, a.feedback.success)
        for e in episodes
        for a in e.attempts
        if a.critique_verdict is not None
    ]
    completion_tokens = sum(e.completion_tokens for e in episodes)
    return RunSummary(
        episodes=n,
        first_try_accuracy=sum(e.first_success for e in episodes) / n if n else 0.0,
        final_accuracy=sum(e.success for e in episodes) / n if n else 0.0,
        recovered_by_retry=sum(e.recovered for e in episodes),
        retried=sum(len(e.attempts) > 1 for e in episodes),
        retrieval_hits=sum(bool(e.retrieved_ids) for e in episodes),
        mean_attempts=sum(len(e.attempts) for e in episodes) / n if n else 0.0,
        critique_agreement=(sum(v == s for v, s in verdicts) / len(verdicts)) if verdicts else None,
        tokens=sum(e.tokens for e in episodes),
        completion_tokens=completion_tokens,
        seconds=seconds,
        episodes_per_second=n / seconds if seconds > 0 else 0.0,
        completion_tokens_per_second=completion_tokens / seconds if seconds > 0 else 0.0,
        errors=errors,
        episode_ids=[e.id for e in episodes],
    )


async def run_episodes(
    tasks: list[Task],
    deps: GraphDeps,
    *,
    concurrency: int = 16,
    run_id: str | None = None,
    seed: int | None = None,
    on_episode: Callable[[Episode | None, EpisodeError | None], None] | None = None,
    checkpointer: BaseCheckpointSaver | None = None,
    metadata: dict[str, Any] | None = None,
    purpose: Purpose = "train",
) -> tuple[list[Episode], RunSummary]:
    """Run one episode per task, at most ``concurrency`` at a time. Returns episodes in task order.

    ``seed`` gives every sampled model call its own seed (reproducible samples). The transformers
    backend can only honour a per-request seed by running that request alone, so seeded sampling
    gives up micro-batching: leave it ``None`` for throughput (greedy calls batch either way).
    ``purpose`` is recorded on every episode (train: experience; eval: a measurement, never trained on).
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    graph = build_episode_graph(deps, checkpointer=checkpointer)
    limit = recursion_limit(deps.config)
    semaphore = asyncio.Semaphore(concurrency)
    results: list[Episode | None] = [None] * len(tasks)
    errors: list[EpisodeError] = []

    async def one(i: int, task: Task) -> None:
        async with semaphore:
            state = initial_state(task, run_id=run_id, seed=None if seed is None else seed + i, metadata=metadata,
                                  purpose=purpose)
            config: dict[str, Any] = {"recursion_limit": limit}
            if checkpointer is not None:
                config["configurable"] = {"thread_id": state["episode_id"]}
            try:
                final = await graph.ainvoke(state, config=config)
            except Exception as e:  # noqa: BLE001 - kept per episode and reported, never swallowed
                err = EpisodeError(task.id, f"{type(e).__name__}: {e}")
                errors.append(err)
                if on_episode:
                    on_episode(None, err)
                return
            results[i] = final["episode"]
            if on_episode:
                on_episode(final["episode"], None)

    start = time.perf_counter()
    await asyncio.gather(*(one(i, t) for i, t in enumerate(tasks)))
    seconds = time.perf_counter() - start
    episodes = [e for e in results if e is not None]
    return episodes, summarize(episodes, errors, seconds)


def eval_config(max_attempts: int = 2, max_tokens: int = 128) -> EpisodeConfig:
    """Held-out evaluation: greedy, no memory hints (they would confound versions), no critique."""
    return EpisodeConfig(
        max_attempts=max_attempts, critique=False, retrieval=False, temperature=0.0, solve_tokens=max_tokens
    )
