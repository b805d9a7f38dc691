"""The improvement cycle, written once: collect → train → evaluate a candidate against the serving
version on held-out tasks → gate → promote.

    selfevolve eval --model v0003-sft --against serving --apply --env arithmetic -n 64   # the CLI
    selfevolve daemon --config docker/daemon.toml                                          # the daemon's gate
    python -m bench.experiments.learning --quick                                           # the experiments

The CLI (``agent/commands/evaluate.py``), the daemon (``agent/daemon/collect.py``, ``gate.py``) and the
experiments (``bench/experiments/*``) call these functions; they differ only in how they get a policy
serving a version (the daemon swaps adapters on one policy, the CLI loads one per version) and in what
they do around the gate (the daemon's tripwires may veto a promotion).

Design decisions
- One outcome type from the episode to the gate: :class:`trainer.gate.TaskOutcome` per task id,
  in :class:`agent.evaluate.EvalResult` per environment and :class:`Evaluation` per version.
- Paired design: every version is scored on the same :class:`HeldOut` tasks (a pure function of the
  environments, counts and seed), greedy, without memory hints, so the gate compares weights.
- **Evaluation episodes are not recorded.** Evaluation is a measurement: its per-task outcomes are kept
  on the version (``metrics["eval"]``, reused by :func:`evaluate_or_reuse`) and the decision on the
  candidate (``metrics["gate"]``). Recorded, held-out trajectories would sit in the vector index and in
  the counts the daemon's curriculum and training trigger read, and every reader would need a filter;
  this way held-out answers can never become hints or training data. Episodes that *are* recorded say
  why in ``Episode.purpose`` (``eval`` for measurements a user runs with ``selfevolve run --split eval``).
- An evaluation in which every episode of an environment failed with an error (not a wrong answer) is
  our bug or the backend's, and raises :class:`EvaluationError` rather than scoring the version 0%.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.evaluate import EvalResult, evaluate, store_result, stored_result
from agent.graph import EpisodeConfig, GraphDeps
from agent.policy.base import Policy
from agent.runner import EpisodeError, RunSummary, run_episodes, summarize
from environments import Environment, Task
from memory.protocol import Library, ModelVersions
from memory.records import Episode, ModelVersion
from trainer import registry
from trainer.crashpoints import crashpoint
from trainer.gate import GateDecision, Metric, TaskOutcome, evaluate_gate

if TYPE_CHECKING:
    from trainer.launch import Launcher
    from trainer.train import ProgressFn

OnEpisode = Callable[[Episode | None, EpisodeError | None], None]


class EvaluationError(RuntimeError):
    """Every evaluation episode of an environment failed with an error (not the model's fault)."""


class CollectionError(RuntimeError):
    """Every collected episode failed with an error (not the model's fault); ``errors`` lists them."""

    def __init__(self, message: str, errors: list[EpisodeError]) -> None:
        super().__init__(message)
        self.errors = errors


# ----------------------------------------------------------------------------------------------- collect
async def collect(
    policy: Policy,
    plan: Sequence[tuple[Environment, Sequence[Task]]],
    config: EpisodeConfig,
    *,
    library: Library | None = None,
    feedback: str = "verifier",
    run_id: str | None = None,
    seed: int | None = None,
    concurrency: int = 16,
    metadata: dict[str, Any] | None = None,
    on_episode: OnEpisode | None = None,
) -> tuple[list[Episode], RunSummary]:
    """Run the planned tasks of every environment concurrently, recorded in ``library`` as experience.

    ``feedback`` is a feedback-source spec (``verifier``, ``majority:k=8`` ...) built per environment.
    Raises :class:`CollectionError` if every episode failed with an error; otherwise errors are in the summary."""
    from agent.feedback import make_feedback_source

    start = time.perf_counter()
    jobs = [run_episodes(list(tasks), GraphDeps(policy, environment, config, library,
                                                   make_feedback_source(feedback, environment)),
                         concurrency=concurrency, run_id=run_id, seed=seed, metadata=metadata, on_episode=on_episode)
            for environment, tasks in plan if tasks]
    results = await asyncio.gather(*jobs)
    episodes = [e for eps, _ in results for e in eps]
    errors = [err for _, s in results for err in s.errors]
    raise_if_all_failed(episodes, errors)
    return episodes, summarize(episodes, errors, time.perf_counter() - start)


def raise_if_all_failed(episodes: Sequence[Episode], errors: list[EpisodeError]) -> None:
    """:class:`CollectionError` when every episode of a collection failed with an error (an infrastructure
    fault, not the model's); any collection (in-process, Ray) applies the same rule."""
    if errors and not episodes:
        raise CollectionError(f"every episode failed (not the model's fault): {errors[0].error}", errors)


# ------------------------------------------------------------------------------------------------- train
@dataclass
class Skipped:
    """Training did not run: memory has too little usable data for the method (``reason`` says what to run)."""

    reason: str


async def train_candidate(library: Library, method: str, *, steps: int, env: str | None = None,
                          overrides: dict[str, Any] | None = None, progress: ProgressFn | None = None, resume: bool = False,
                          gpu: bool = False, train_fn: Callable[..., ModelVersion] | None = None,
                          launcher: Launcher | None = None) -> ModelVersion | Skipped:
    """Train ``method`` in a worker thread and register the candidate, or :class:`Skipped` for too little data.

    ``train_fn`` replaces :func:`trainer.train.train` (same signature; the daemon's plug-in); ``launcher``
    (:func:`trainer.launch.make_launcher`) runs the trainer under ``accelerate launch``."""
    from trainer.train import NotEnoughDataError, train

    fn = train_fn or train
    extra: dict[str, Any] = {"gpu": True} if gpu else {}  # plug-in trainers written before the gpu option keep working
    if launcher is not None and not launcher.inprocess:  # ... and before the launcher option
        extra["launcher"] = launcher
    try:
        return await asyncio.to_thread(fn, library, method, steps=steps, env=env, overrides=overrides,
                                       progress=progress, resume=resume, **extra)
    except NotEnoughDataError as e:
        return Skipped(str(e))


async def promote(library: ModelVersions, policy: Policy, version_id: str, note: str) -> ModelVersion:
    """Promote ``version_id`` unconditionally and serve it on ``policy`` (the experiments' trajectories)."""
    mv = registry.promote(library, version_id, note=note)
    await asyncio.to_thread(policy.set_adapter, mv.id, mv.adapter_path)
    return mv


# ---------------------------------------------------------------------------------------------- evaluate
@dataclass(frozen=True)
class HeldOut:
    """The held-out tasks every compared version is scored on, and how they are attempted."""

    counts: tuple[tuple[Environment, int], ...]  # (environment, distinct eval tasks of it)
    seed: int = 0
    max_attempts: int = 2
    max_tokens: int = 128
    concurrency: int = 32

    @classmethod
    def each(cls, envs: Iterable[Environment], n: int, **settings: Any) -> HeldOut:
        """``n`` tasks of every environment."""
        return cls(tuple((environment, n) for environment in envs), **settings)

    @classmethod
    def shared(cls, envs: Iterable[Environment], total: int, **settings: Any) -> HeldOut:
        """``total`` tasks split evenly across the environments (as the daemon's gate does); the remainder
        goes to the first specs in sorted order, and an environment left with none is left out."""
        by_spec = {environment.spec: environment for environment in envs}
        base, rest = divmod(total, len(by_spec)) if by_spec else (0, 0)
        extra = set(sorted(by_spec)[:rest])
        counts = ((environment, base + (spec in extra)) for spec, environment in by_spec.items())
        return cls(tuple((environment, n) for environment, n in counts if n), **settings)


@dataclass
class Evaluation:
    """One version on every environment of a :class:`HeldOut`."""

    version: str
    results: dict[str, EvalResult]  # env spec -> result, in HeldOut order
    reused: bool = False  # read back from the version's metrics instead of run

    @property
    def outcomes(self) -> dict[str, TaskOutcome]:
        """Every task's outcome (task ids are unique across environments; the first result of a task counts)."""
        merged: dict[str, TaskOutcome] = {}
        for res in self.results.values():
            for tid, outcome in res.outcomes.items():
                merged.setdefault(tid, outcome)
        return merged

    @property
    def errors(self) -> list[str]:
        return [e for res in self.results.values() for e in res.errors]

    def accuracy(self) -> dict[str, float]:
        """``first``/``final`` accuracy over all tasks and ``n``."""
        out = self.outcomes
        n = len(out) or 1
        return {"first": sum(o.first for o in out.values()) / n, "final": sum(o.final for o in out.values()) / n,
                "n": len(out)}


async def evaluate_version(policy: Policy, held_out: HeldOut, *, hints: Library | None = None,
                           on_episode: OnEpisode | None = None) -> Evaluation:
    """Score the version ``policy`` serves on every held-out environment (nothing recorded)."""
    results = {}
    for environment, n in held_out.counts:
        res = await evaluate(policy, environment, n, seed=held_out.seed, max_attempts=held_out.max_attempts,
                             max_tokens=held_out.max_tokens, concurrency=held_out.concurrency, hints=hints,
                             on_episode=on_episode)
        if res.errors and len(res.errors) == len(res.outcomes):
            raise EvaluationError(f"every eval episode on {environment.spec} failed (not the model's fault): {res.errors[0]}")
        results[environment.spec] = res
    return Evaluation(policy.version, results)


def stored_evaluation(library: ModelVersions, version_id: str, held_out: HeldOut) -> Evaluation | None:
    """The evaluation kept on the version for exactly these held-out settings (every environment), or None."""
    results = {}
    for environment, n in held_out.counts:
        res = stored_result(library, version_id, environment.spec, n, held_out.seed, held_out.max_attempts)
        if res is None:
            return None
        results[environment.spec] = res
    return Evaluation(version_id, results, reused=True)


async def evaluate_or_reuse(library: ModelVersions, version_id: str, held_out: HeldOut,
                            open_policy: Callable[[str], Policy], *, fresh: bool = False,
                            on_episode: OnEpisode | None = None) -> Evaluation:
    """The stored evaluation of ``version_id`` if there is one (unless ``fresh``), else run it with a policy
    from ``open_policy(version_id)`` (closed afterwards) and store it if no episode failed with an error."""
    cached = None if fresh else stored_evaluation(library, version_id, held_out)
    if cached is not None:
        return cached
    policy = open_policy(version_id)
    try:
        ev = await evaluate_version(policy, held_out, on_episode=on_episode)
    finally:
        await policy.aclose()
    if not ev.errors:
        for res in ev.results.values():
            store_result(library, res)
    return ev


# ------------------------------------------------------------------------------------------ gate, promote
@dataclass(frozen=True)
class GateRule:
    """How :func:`trainer.gate.evaluate_gate` decides (see there)."""

    primary: Metric = "final"
    margin: float = 0.0
    require_significant: bool = False
    drop_unpaired: bool = False  # leave out tasks only one version has (else they raise)


@dataclass
class GateOutcome:
    candidate: Evaluation
    current: Evaluation
    decision: GateDecision
    veto: str | None = None  # why a winning candidate was rejected anyway (the daemon's tripwire)
    applied: bool = False

    @property
    def promoted(self) -> bool:
        return self.applied and self.decision.promote and self.veto is None


def decide(candidate: Evaluation, current: Evaluation, rule: GateRule = GateRule()) -> GateDecision:
    """The paired gate on two evaluations of the same held-out tasks."""
    if candidate.version == current.version:
        raise ValueError(f"the candidate and the version to beat are the same ({candidate.version})")
    return evaluate_gate(candidate.outcomes, current.outcomes, candidate_id=candidate.version,
                         current_id=current.version, primary=rule.primary, margin=rule.margin,
                         require_significant=rule.require_significant, drop_unpaired=rule.drop_unpaired)


def apply_decision(library: ModelVersions, decision: GateDecision, veto: str | None = None) -> ModelVersion:
    """Keep the decision on the candidate (``metrics["gate"]``), then promote it, or mark it ``rejected``
    (with ``veto`` as the reason when one is given)."""
    mv = library.get_model_version(decision.candidate)
    library.add_model_version(mv.model_copy(update={"metrics": {**mv.metrics, "gate": decision.model_dump(mode="json")}}))
    if veto is not None:
        return library.set_model_status(decision.candidate, "rejected", note=f"tripwire: {veto}")
    return registry.apply_gate(library, decision.candidate, decision)


async def gate(
    library: ModelVersions,
    candidate_id: str,
    evaluate_one: Callable[[str], Awaitable[Evaluation]],
    *,
    against: str | None = None,
    rule: GateRule = GateRule(),
    apply: bool = True,
    veto: Callable[[Evaluation], str | None] | None = None,
) -> GateOutcome:
    """Evaluate the candidate, then the version to beat (``against``, default: the serving one), decide,
    and (``apply``) promote or reject the candidate.

    ``evaluate_one(version_id)`` is the caller's way to score a version (:func:`evaluate_version` on a
    policy serving it, or :func:`evaluate_or_reuse`); ``veto(candidate evaluation)`` may return a reason to
    reject the candidate whatever the decision (it is called after both evaluations, before applying)."""
    current_id = against or library.serving_version().id
    if current_id == candidate_id:
        raise ValueError(f"the candidate and the version to beat are the same ({candidate_id})")
    cand = await evaluate_one(candidate_id)
    curr = await evaluate_one(current_id)
    decision = decide(cand, curr, rule)
    outcome = GateOutcome(cand, curr, decision, veto=veto(cand) if veto is not None else None)
    crashpoint("gate.decided")
    if apply:
        apply_decision(library, decision, outcome.veto)
        outcome.applied = True
    return outcome


__all__ = [
    "CollectionError", "Evaluation", "EvaluationError", "GateOutcome", "GateRule", "HeldOut", "Skipped",
    "apply_decision", "collect", "decide", "evaluate_or_reuse", "evaluate_version", "gate", "promote",
    "stored_evaluation", "train_candidate",
]
