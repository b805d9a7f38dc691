"""Held-out evaluation of one model version: first-try and final (after reflect+retry) accuracy.

Every version is scored on the *same* tasks — ``env.sample(n, "eval", seed)`` is a pure function of
(environment config, n, seed) — so two versions' results are paired task by task, which is what the
promotion gate compares. Decoding is greedy and memory hints are off, so a difference between two
versions is the weights', not the sampler's or the library's.

    selfevolve eval --model <version> --env arithmetic -n 64
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from agent.graph import EpisodeConfig, GraphDeps
from agent.policy.base import Policy
from agent.runner import eval_config, run_episodes
from environments import Environment, Task
from trainer.gate import wilson  # one definition of the 95% interval, shared with the gate


@dataclass
class EvalResult:
    env: str
    version: str
    n: int
    seed: int
    max_attempts: int
    task_ids: list[str]
    first: list[int]  # 1 if solved on the first try, per (distinct) task, in task order
    final: list[int]  # 1 if solved by the last attempt
    seconds: float = 0.0
    tokens: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def first_try_accuracy(self) -> float:
        return sum(self.first) / len(self.first) if self.first else 0.0

    @property
    def final_accuracy(self) -> float:
        return sum(self.final) / len(self.final) if self.final else 0.0

    def summary(self) -> dict[str, Any]:
        lo, hi = wilson(sum(self.first), len(self.first))
        flo, fhi = wilson(sum(self.final), len(self.final))
        return {
            "env": self.env, "version": self.version, "n": self.n, "seed": self.seed,
            "first_try_accuracy": self.first_try_accuracy, "first_try_ci95": [lo, hi],
            "final_accuracy": self.final_accuracy, "final_ci95": [flo, fhi],
            "seconds": self.seconds, "tokens": self.tokens, "errors": len(self.errors),
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def unique_eval_tasks(env: Environment, n: int, seed: int = 0) -> list[Task]:
    """``n`` distinct held-out tasks (fewer if the eval split is smaller), the same list every call."""
    tasks: dict[str, Task] = {}
    for draw in range(1, 9):
        for t in env.sample(n * draw * 2, split="eval", seed=seed):
            tasks.setdefault(t.id, t)
        if len(tasks) >= n:
            break
    return list(tasks.values())[:n]


async def evaluate(
    policy: Policy,
    env: Environment,
    n: int,
    *,
    seed: int = 0,
    max_attempts: int = 2,
    max_tokens: int = 128,
    concurrency: int = 32,
    library: Any = None,
    run_id: str | None = None,
    on_episode=None,
    config: EpisodeConfig | None = None,
) -> EvalResult:
    """Run ``n`` held-out tasks greedily; episodes are recorded (tagged purpose=eval) when a library is given.

    ``config`` replaces the default ``eval_config(max_attempts, max_tokens)`` episode settings (e.g. to turn
    retrieval from ``library`` on); it is still not recorded without a library.
    """
    tasks = unique_eval_tasks(env, n, seed)
    if config is None:
        config = eval_config(max_attempts=max_attempts, max_tokens=max_tokens)
    if library is None:
        config = config.model_copy(update={"record": False})
    deps = GraphDeps(policy, env, config, library)
    episodes, summary = await run_episodes(
        tasks, deps, concurrency=concurrency, run_id=run_id, seed=seed, on_episode=on_episode,
        metadata={"purpose": "eval"},
    )
    by_task = {ep.task.id: ep for ep in episodes}
    first, final, ids = [], [], []
    for task in tasks:  # task order; an episode that errored counts as unsolved and is listed in errors
        ep = by_task.get(task.id)
        ids.append(task.id)
        first.append(int(ep is not None and ep.first_success))
        final.append(int(ep is not None and ep.success))
    return EvalResult(
        env=env.spec, version=policy.version, n=n, seed=seed, max_attempts=max_attempts, task_ids=ids,
        first=first, final=final, seconds=summary.seconds, tokens=summary.tokens,
        errors=[e.error for e in summary.errors],
    )


def eval_key(env_spec: str, n: int, seed: int, max_attempts: int) -> str:
    return f"{env_spec}|n={n}|seed={seed}|attempts={max_attempts}"


def store_result(library: Any, version_id: str, result: EvalResult) -> None:
    """Keep the per-task outcomes on the version, so later gates reuse them instead of re-running."""
    mv = library.get_model_version(version_id)
    metrics = dict(mv.metrics)
    evals = dict(metrics.get("eval", {}))
    evals[eval_key(result.env, result.n, result.seed, result.max_attempts)] = {
        **result.summary(),
        "outcomes": {t: [f, g] for t, f, g in zip(result.task_ids, result.first, result.final, strict=True)},
    }
    metrics["eval"] = evals
    library.add_model_version(mv.model_copy(update={"metrics": metrics}))


def stored_outcomes(library: Any, version_id: str, key: str) -> dict[str, tuple[int, int]] | None:
    entry = library.get_model_version(version_id).metrics.get("eval", {}).get(key)
    return None if entry is None else {t: (int(v[0]), int(v[1])) for t, v in entry["outcomes"].items()}
