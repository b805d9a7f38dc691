"""The collect phase: plan the cycle's tasks (curriculum), run the episodes in chunks, probe monitors.

Design decisions
- Episodes carry the cycle's run id and are recorded one by one as they finish, so the count of the
  run's episodes in SQLite *is* the progress: a restart after kill -9 collects only the rest.
- Chunks of ``collect_chunk`` episodes; a stop request or a budget is checked between chunks. The seed
  of a chunk is derived from (config seed, cycle, episodes done, errors so far), so runs are repeatable.
- Each chunk is :func:`agent.cycle.collect` (the one collection the experiments use too). A chunk in
  which every episode failed with an error (not a wrong answer) is an infrastructure fault and raises;
  failed episodes are not recorded, so later chunks make up the count.
- With ``ray`` set, a chunk runs on Ray workers (:mod:`agent.scale`) serving the version the daemon
  serves (a new pool after a promotion); the daemon still records every episode itself, once, so the
  count above stays the progress. Monitors and the gate run on the daemon's own policy.
- Monitors (B-STaR) sample ``k`` answers for a few of the cycle's tasks after collection; their
  numbers go to the state, the log and TensorBoard, never into training.

Used as a mixin of :class:`agent.daemon.loop.Daemon`; run with ``selfevolve daemon``.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

from agent.daemon import curriculum, monitors
from agent.daemon.config import DaemonConfig

if TYPE_CHECKING:
    from agent.policy.base import Policy
    from agent.runner import RunSummary
    from agent.scale.session import RaySession
    from environments import Environment, Task
    from memory.protocol import Library


class CollectPhase:
    """``plan_tasks``, ``collect`` and ``monitor`` (mixin of ``Daemon``)."""

    cfg: DaemonConfig
    state: dict[str, Any]
    envs: dict[str, Environment]
    weights: dict[str, float]
    lib: Library
    policy: Policy
    _ray: RaySession | None = None  # the Ray workers, when cfg.ray is set

    def plan_tasks(self, n: int, seed: int) -> dict[str, list[Task]]:
        c = self.cfg.curriculum
        specs = list(self.envs)
        if not c.enabled:
            counts = curriculum.allocate(n, self.weights)
            return {s: self.envs[s].sample(k, "train", seed) for s, k in counts.items() if k}
        stats = curriculum.level_stats(ep for s in specs for ep in self.lib.episodes(env=s)[-c.window:])
        counts, levels = curriculum.plan(specs, [self.weights[s] for s in specs], stats, n,
                                         min_samples=c.min_samples, explore_weight=c.explore_weight, floor=c.floor)
        rng = random.Random(seed)
        out = {}
        for spec, k in counts.items():
            if k:
                candidates = self.envs[spec].sample(k * c.oversample, "train", seed)
                out[spec] = curriculum.pick_tasks(candidates, k, levels[spec], c.explore_weight, rng)
        return out

    async def collect(self, cur: dict[str, Any]) -> bool:
        """Collect the cycle's episodes in chunks; False if stopped before the cycle had them all."""
        from agent.cycle import CollectionError

        run_id, target = cur["run_id"], self.cfg.episodes_per_cycle
        errors = 0
        while True:
            done = self.lib.count(run_id=run_id)
            self.state["totals"]["episodes"] = self.state["totals"].get("episodes_before_cycle", 0) + done
            if done >= target:
                break
            if self.check_stop():
                self.save()
                return False
            n = min(self.cfg.collect_chunk, target - done)
            seed = self.cfg.seed * 1_000_003 + cur["cycle"] * 10_007 + done + errors
            plan = [(self.envs[spec], tasks) for spec, tasks in self.plan_tasks(n, seed).items()]
            t0 = time.time()
            try:
                summary = await self.collect_chunk(plan, run_id, seed, cur["cycle"])
            except CollectionError as e:
                self.event("episode_errors", count=len(e.errors), first=e.errors[0].error)
                raise
            self.state["totals"]["collect_seconds"] += time.time() - t0
            if summary.errors:
                errors += len(summary.errors)
                self.event("episode_errors", count=len(summary.errors), first=summary.errors[0].error)
            self.save()
        self.state["totals"]["episodes_before_cycle"] = self.state["totals"]["episodes"]
        eps = self.lib.episodes(run_id=run_id)
        cur["record"]["collected"] = {
            "episodes": len(eps), "first_try_accuracy": sum(e.first_success for e in eps) / len(eps),
            "final_accuracy": sum(e.success for e in eps) / len(eps), "errors": errors,
            "per_env": {s: sum(e.env == s for e in eps) for s in self.envs},
        }
        if self.cfg.feedback != "verifier":  # the pseudo-reward the serving version earns (SRT's training reward)
            cur["record"]["collected"]["self_reward"] = sum(e.attempts[0].feedback.reward for e in eps) / len(eps)
            truths = [e.attempts[0].ground_truth for e in eps if e.attempts[0].ground_truth is not None]
            if truths:
                cur["record"]["collected"]["true_first_try_accuracy"] = sum(t.success for t in truths) / len(truths)
        self.event("collected", cycle=cur["cycle"], **cur["record"]["collected"])
        return True

    async def collect_chunk(self, plan: list, run_id: str, seed: int, cycle: int) -> RunSummary:
        """One chunk of episodes, recorded: in this process, or on the Ray workers with ``ray`` set."""
        from agent.cycle import collect, raise_if_all_failed

        metadata = {"origin": "daemon", "cycle": cycle}
        if self.cfg.ray is None:
            _, summary = await collect(self.policy, plan, self.cfg.episode, library=self.lib, feedback=self.cfg.feedback,
                                       run_id=run_id, seed=seed, concurrency=self.cfg.concurrency, metadata=metadata)
            return summary
        episodes, summary = await self.ray_session().collect(plan, self.cfg.episode, library=self.lib,
                                                             feedback=self.cfg.feedback, run_id=run_id, seed=seed,
                                                             metadata=metadata)
        raise_if_all_failed(episodes, summary.errors)
        return summary

    def ray_session(self) -> RaySession:
        """The daemon's Ray workers, serving the version ``self.policy`` serves (started on first use)."""
        from agent.scale.session import RaySession
        from agent.serving import serving_target

        adapter, version = serving_target(self.cfg.model, self.lib, self.policy.version)
        if self._ray is None:
            self._ray = RaySession(self.cfg.ray_options, self.cfg.model, version=version, adapter_path=adapter,
                                   concurrency=self.cfg.concurrency).open()
        else:
            self._ray.serve(version, adapter)
        return self._ray

    def close_ray(self) -> None:
        if self._ray is not None:
            self._ray.close()
            self._ray = None

    async def monitor(self, cur: dict[str, Any]) -> dict[str, Any]:
        from agent.policy.base import SamplingParams

        m = self.cfg.monitors
        eps = self.lib.episodes(run_id=cur["run_id"])
        result: dict[str, Any] = {"critique_agreement": monitors.critique_agreement(eps)}
        if m.tasks and eps:
            probe = [e.task for e in eps[: m.tasks]]
            params = SamplingParams(max_tokens=self.cfg.episode.solve_tokens, temperature=m.temperature, n=m.k)
            completions = await self.policy.generate([t.messages() for t in probe], params)
            samples = []
            for i, task in enumerate(probe):
                env = self.envs.get(task.env)
                feedback = [env.verify(task, c.text) for c in completions[i * m.k:(i + 1) * m.k]]
                samples.append(([f.answer for f in feedback], [f.success for f in feedback]))
            result.update(monitors.summarize_probe(samples, m.target_distinct))
        for key, value in result.items():
            self.scalar(f"monitors/{key}", value, cur["cycle"])
        self.event("monitors", cycle=cur["cycle"], **result)
        return result
