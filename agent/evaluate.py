"""Held-out evaluation of one model version on one environment: per-task first-try and final outcomes.

Every version is scored on the *same* tasks — ``unique_eval_tasks(environment, n, seed)`` is a pure function of
(environment config, n, seed) — so two versions' results are paired task by task, which is what the
promotion gate compares. Decoding is greedy and memory hints are off unless a library is given as
``hints`` (the learning experiment's retrieval-only method), so a difference between two versions is the
weights', not the sampler's or the library's. Evaluation episodes are never recorded: the per-task
outcomes (:class:`trainer.gate.TaskOutcome`, the one outcome type from the episode to the gate) are kept
on the version instead (:func:`store_result`). :mod:`agent.cycle` composes this into the cycle.

    selfevolve eval --model <version> --env arithmetic -n 64
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.graph import GraphDeps
from agent.policy.base import Policy
from agent.runner import EpisodeError, eval_config, run_episodes
from environments import Environment, Task
from memory.protocol import Library, ModelVersions
from memory.records import Episode
from trainer.gate import TaskOutcome, outcomes_from_episodes, wilson  # one outcome type, one 95% interval


@dataclass
class EvalResult:
    """One version on one environment's held-out tasks: an outcome per task, in task order."""

    env: str  # the environment's spec
    version: str
    n: int
    seed: int
    max_attempts: int
    outcomes: dict[str, TaskOutcome]  # task id -> (solved first try, solved in the end); an error counts unsolved
    seconds: float = 0.0
    tokens: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def task_ids(self) -> list[str]:
        return list(self.outcomes)

    @property
    def first(self) -> list[int]:
        """1 if solved on the first try, per task in task order (the results files' shape)."""
        return [int(o.first) for o in self.outcomes.values()]

    @property
    def final(self) -> list[int]:
        """1 if solved by the last attempt, per task in task order."""
        return [int(o.final) for o in self.outcomes.values()]

    @property
    def first_try_accuracy(self) -> float:
        return sum(self.first) / len(self.outcomes) if self.outcomes else 0.0

    @property
    def final_accuracy(self) -> float:
        return sum(self.final) / len(self.outcomes) if self.outcomes else 0.0

    def summary(self) -> dict[str, Any]:
        lo, hi = wilson(sum(self.first), len(self.outcomes))
        flo, fhi = wilson(sum(self.final), len(self.outcomes))
        return {
            "env": self.env, "version": self.version, "n": self.n, "seed": self.seed,
            "first_try_accuracy": self.first_try_accuracy, "first_try_ci95": [lo, hi],
            "final_accuracy": self.final_accuracy, "final_ci95": [flo, fhi],
            "seconds": self.seconds, "tokens": self.tokens, "errors": len(self.errors),
        }


def unique_eval_tasks(environment: Environment, n: int, seed: int = 0) -> list[Task]:
    """``n`` distinct held-out tasks (fewer if the eval split is smaller), the same list every call."""
    tasks: dict[str, Task] = {}
    for draw in range(1, 9):
        for t in environment.sample(n * draw * 2, split="eval", seed=seed):
            tasks.setdefault(t.id, t)
        if len(tasks) >= n:
            break
    return list(tasks.values())[:n]


async def evaluate(
    policy: Policy,
    environment: Environment,
    n: int,
    *,
    seed: int = 0,
    max_attempts: int = 2,
    max_tokens: int = 128,
    concurrency: int = 32,
    hints: Library | None = None,
    on_episode: Callable[[Episode | None, EpisodeError | None], None] | None = None,
) -> EvalResult:
    """Run ``n`` held-out tasks greedily (:func:`agent.runner.eval_config`); nothing is recorded.

    ``hints``: show similar past successes from this library (retrieval on, as the episode graph does)."""
    tasks = unique_eval_tasks(environment, n, seed)
    config = eval_config(max_attempts=max_attempts, max_tokens=max_tokens).model_copy(
        update={"record": False, "retrieval": hints is not None})
    deps = GraphDeps(policy, environment, config, hints)
    episodes, summary = await run_episodes(tasks, deps, concurrency=concurrency, seed=seed, on_episode=on_episode,
                                           purpose="eval")
    found = outcomes_from_episodes(episodes)
    # task order; an episode that errored counts as unsolved and is listed in errors
    outcomes = {task.id: found.get(task.id, TaskOutcome(False, False)) for task in tasks}
    return EvalResult(env=environment.spec, version=policy.version, n=n, seed=seed, max_attempts=max_attempts,
                      outcomes=outcomes, seconds=summary.seconds, tokens=summary.tokens,
                      errors=[e.error for e in summary.errors])


def eval_key(env_spec: str, n: int, seed: int, max_attempts: int) -> str:
    return f"{env_spec}|n={n}|seed={seed}|attempts={max_attempts}"


def store_result(library: ModelVersions, result: EvalResult) -> None:
    """Keep the per-task outcomes on the version, so later gates reuse them instead of re-running."""
    mv = library.get_model_version(result.version)
    metrics = dict(mv.metrics)
    evals = dict(metrics.get("eval", {}))
    evals[eval_key(result.env, result.n, result.seed, result.max_attempts)] = {
        **result.summary(), "outcomes": {t: [int(o.first), int(o.final)] for t, o in result.outcomes.items()},
    }
    metrics["eval"] = evals
    library.add_model_version(mv.model_copy(update={"metrics": metrics}))


def stored_result(library: ModelVersions, version_id: str, env_spec: str, n: int, seed: int,
                  max_attempts: int) -> EvalResult | None:
    """The result :func:`store_result` kept for exactly these settings, or None."""
    entry = library.get_model_version(version_id).metrics.get("eval", {}).get(eval_key(env_spec, n, seed, max_attempts))
    if entry is None:
        return None
    outcomes = {t: TaskOutcome(bool(v[0]), bool(v[1])) for t, v in entry["outcomes"].items()}
    return EvalResult(env=env_spec, version=version_id, n=n, seed=seed, max_attempts=max_attempts, outcomes=outcomes,
                      seconds=float(entry.get("seconds", 0.0)), tokens=int(entry.get("tokens", 0)))
