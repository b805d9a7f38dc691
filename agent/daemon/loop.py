"""The self-improvement loop: collect → (train → evaluate → gate → promote/keep) → collect …

    selfevolve daemon --workspace ws --config docker/daemon.toml

Design decisions
- Durable state is SQLite (episodes, runs, model versions) plus ``daemon/state.json`` (replaced
  atomically). Each cycle is a ``Run(kind="daemon")``; its episodes carry the run id and are recorded
  one by one as they finish, so a restart after kill -9 counts what the cycle already has and collects
  only the rest (nothing lost, nothing duplicated).
- The state file names the phase in progress (collect, train, gate). A restart in ``train`` first looks
  for a candidate registered since the training started (the registry writes the adapter before
  registering, so a registered candidate is complete), then resumes the trainer from its checkpoint,
  else trains afresh. A restart in ``gate`` re-evaluates unless the gate was already applied.
- Stop (SIGTERM, SIGINT, ``selfevolve stop``): a flag checked between chunks of episodes, inside the
  trainer's progress callback (training stops at a step boundary; TRL's checkpoints let it resume) and
  between phases; then the state is saved and the process exits 0.
- The candidate and the current version are scored on the same held-out tasks with the same policy
  object (adapters swapped with ``set_adapter``), greedy, without memory hints, and the eval episodes
  are not recorded (held-out answers must never become training data or hints).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

from agent.daemon import control, curriculum, monitors, tripwires
from agent.daemon.config import DaemonConfig, load_plugin

log = logging.getLogger(__name__)
STATE_VERSION = 1
HISTORY = 50


class StopTraining(Exception):
    """Raised from the trainer's progress callback when a stop was requested."""


def new_state() -> dict[str, Any]:
    return {
        "state_version": STATE_VERSION, "status": "starting", "stop_reason": None, "first_started_at": time.time(),
        "wall_time_s": 0.0, "cycles_completed": 0, "current": None, "last_train_at": 0.0,
        "totals": {"episodes": 0, "training_steps": 0, "trainings": 0, "collect_seconds": 0.0},
        "serving_version": "base", "last_training": None, "last_gate": None, "monitors": None,
        "training_history": [], "accuracy_by_version": {}, "training_halted": None, "training_refused": None,
        "budget": {}, "history": [],
    }


class Daemon:
    def __init__(self, workspace: str | Path, config: DaemonConfig, *, train_fn: Any = None) -> None:
        from environments import get_environment

        self.workspace = Path(workspace)
        self.cfg = config
        self.envs = {}  # canonical spec -> Environment
        self.weights = {}
        for entry in config.environments:
            env = get_environment(entry.spec)
            self.envs[env.spec] = env
            self.weights[env.spec] = entry.weight
        self.train_fn = train_fn
        self.stopping: str | None = None
        self.lib: Any = None
        self.policy: Any = None
        self.writer: Any = None
        self.state: dict[str, Any] = new_state()
        self._session_start = time.time()
        self._wall_base = 0.0

    # ----- plumbing -----
    def event(self, name: str, **fields: Any) -> None:
        control.append_log(self.workspace, name, **fields)
        log.info("%s %s", name, {k: v for k, v in fields.items() if not isinstance(v, dict | list)})

    def save(self) -> None:
        self.state["wall_time_s"] = self._wall_base + (time.time() - self._session_start)
        self.state["budget"] = self.budget_use()
        control.write_json_atomic(control.state_path(self.workspace), self.state)

    def request_stop(self, reason: str) -> None:
        if self.stopping is None:
            self.stopping = reason
            self.event("stop_requested", reason=reason)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.request_stop(f"signal {signal.Signals(signum).name}")
        signal.signal(signum, signal.SIG_DFL)  # a second signal kills at once

    def check_stop(self) -> bool:
        if self.stopping is None:
            requested = control.stop_requested(self.workspace)
            if requested:
                self.request_stop(requested)
        if self.stopping is None:
            reason = self.budget_reached()
            if reason:
                self.request_stop(reason)
        return self.stopping is not None

    def scalar(self, tag: str, value: Any, step: int) -> None:
        if self.writer is not None and isinstance(value, int | float) and not isinstance(value, bool):
            self.writer.add_scalar(tag, value, step)

    # ----- budgets -----
    def budget_use(self) -> dict[str, Any]:
        b, t = self.cfg.budgets, self.state["totals"]
        return {
            "wall_time_s": [round(self._wall_base + time.time() - self._session_start, 1), b.wall_time_s],
            "episodes": [t["episodes"], b.episodes],
            "training_steps": [t["training_steps"], b.training_steps],
            "cycles": [self.state["cycles_completed"], b.cycles],
            "disk_mb": [round(control.disk_usage_mb(self.workspace), 1), b.disk_mb],
        }

    def budget_reached(self) -> str | None:
        b, t = self.cfg.budgets, self.state["totals"]
        wall = self._wall_base + time.time() - self._session_start
        if b.wall_time_s is not None and wall >= b.wall_time_s:
            return f"budget: wall time {wall:.0f}s >= {b.wall_time_s:.0f}s"
        if b.episodes is not None and t["episodes"] >= b.episodes:
            return f"budget: episodes {t['episodes']} >= {b.episodes}"
        if b.training_steps is not None and t["training_steps"] >= b.training_steps:
            return f"budget: training steps {t['training_steps']} >= {b.training_steps}"
        if b.cycles is not None and self.state["cycles_completed"] >= b.cycles:
            return f"budget: cycles {self.state['cycles_completed']} >= {b.cycles}"
        return None

    # ----- setup -----
    def open(self) -> None:
        from agent.serving import open_library

        if self.cfg.embedder != "default":
            from memory.library import ExperienceLibrary

            self.lib = ExperienceLibrary(self.workspace, embedder=load_plugin(self.cfg.embedder)())
        else:
            self.lib = open_library(self.workspace)
        previous = control.read_state(self.workspace)
        if previous is not None:
            self.state = {**new_state(), **previous}
            self._wall_base = float(previous.get("wall_time_s", 0.0))
        self.state.update(status="running", stop_reason=None, pid=os.getpid())
        self.sync_index()
        self.policy = self.load_policy()
        if self.cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.workspace / "tb" / "daemon"))

    def sync_index(self) -> None:
        """Repair the Chroma index if a crash left it behind SQLite (SQLite wins)."""
        try:
            repaired = self.lib.sync()
        except Exception as e:  # noqa: BLE001 - the index is rebuildable; report and go on
            self.event("index_repair_failed", error=f"{type(e).__name__}: {e}")
            return
        if repaired:
            self.event("index_repaired", episodes=repaired)

    def load_policy(self, version: str | None = None) -> Any:
        mv = self.lib.get_model_version(version) if version else self.lib.serving_version()
        if self.cfg.model.startswith("python:"):
            return load_plugin(self.cfg.model)(version=mv.id, adapter_path=mv.adapter_path)
        from agent.serving import serving_policy

        return serving_policy(self.cfg.model, self.lib, mv.id)

    def serve(self, version_id: str) -> None:
        """Hot-swap the serving policy to ``version_id`` (a no-op if already served)."""
        mv = self.lib.get_model_version(version_id)
        if self.policy.version != mv.id:
            self.policy.set_adapter(mv.id, mv.adapter_path)
        self.state["serving_version"] = mv.id

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.lib is not None:
            self.lib.close()

    # ----- the loop -----
    async def run(self) -> str:
        """Run cycles until a stop or a budget; returns the stop reason."""
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.open()
            self.event("started", cycles_completed=self.state["cycles_completed"], serving=self.policy.version,
                       resuming=(self.state.get("current") or {}).get("phase"))
            self.serve(self.lib.serving_version().id)
            self.save()
            while not self.check_stop():
                await self.cycle()
                if self.cfg.sleep_s and not self.check_stop():
                    await asyncio.sleep(self.cfg.sleep_s)
            self.state.update(status="stopped", stop_reason=self.stopping)
            self.save()
            self.event("stopped", reason=self.stopping)
            return self.stopping or "stopped"
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
            if self.policy is not None:
                await self.policy.aclose()
            self.close()

    async def cycle(self) -> None:
        st = self.state
        cur = st.get("current")
        if cur is None or cur.get("phase") == "done":
            from memory.records import new_id

            cur = {"cycle": st["cycles_completed"], "phase": "collect", "run_id": new_id("daemon"),
                   "started_at": time.time(), "record": {}}
            st["current"] = cur
            self.save()
            self.event("cycle_started", cycle=cur["cycle"], run_id=cur["run_id"])
        self.ensure_run(cur)
        record = cur.setdefault("record", {})
        if cur["phase"] == "collect":
            complete = await self.collect(cur)
            if not complete:
                return
            record["monitors"] = await self.monitor(cur)
            st["monitors"] = record["monitors"]
            cur["phase"] = "train"
            cur["train_started_at"] = None
            self.save()
        if cur["phase"] == "train" and not self.check_stop():
            candidate = await self.maybe_train(cur)
            if self.stopping and candidate is None and cur.get("train_started_at"):
                return  # interrupted mid-training: resume from the checkpoint next start
            cur["candidate"] = candidate
            cur["phase"] = "gate" if candidate else "finish"
            self.save()
        if cur["phase"] == "gate" and not self.check_stop():
            await self.gate(cur)
            cur["phase"] = "finish"
            self.save()
        if cur["phase"] == "finish":
            self.finish(cur)

    def ensure_run(self, cur: dict[str, Any]) -> None:
        from memory.records import Run

        try:
            self.lib.get_run(cur["run_id"])
        except KeyError:
            self.lib.start_run(Run(id=cur["run_id"], kind="daemon", env=",".join(self.envs),
                                   model_version=self.policy.version, config=self.cfg.model_dump(mode="json"),
                                   started_at=cur["started_at"]))

    # ----- collect -----
    def plan_tasks(self, n: int, seed: int) -> dict[str, list[Any]]:
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
        from agent.feedback import make_feedback_source
        from agent.graph import GraphDeps
        from agent.runner import run_episodes

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
            plan = self.plan_tasks(n, seed)
            t0 = time.time()
            jobs = []
            for spec, tasks in plan.items():
                env = self.envs[spec]
                deps = GraphDeps(self.policy, env, self.cfg.episode, self.lib, make_feedback_source(self.cfg.feedback, env))
                jobs.append(run_episodes(tasks, deps, concurrency=self.cfg.concurrency, run_id=run_id, seed=seed,
                                         metadata={"purpose": "daemon", "cycle": cur["cycle"]}))
            results = await asyncio.gather(*jobs)
            self.state["totals"]["collect_seconds"] += time.time() - t0
            failed = [e for _, s in results for e in s.errors]
            if failed:
                errors += len(failed)
                self.event("episode_errors", count=len(failed), first=failed[0].error)
                if sum(s.episodes for _, s in results) == 0:
                    raise RuntimeError(f"every episode of a chunk failed (not the model's fault): {failed[0].error}")
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

    # ----- train -----
    def training_blocker(self) -> str | None:
        t, b = self.cfg.training, self.cfg.budgets
        if not t.enabled:
            return "training disabled in config"
        if self.state.get("training_halted"):
            return f"training halted by tripwire: {self.state['training_halted']}"
        if b.disk_mb is not None:
            used = control.disk_usage_mb(self.workspace)
            if used > b.disk_mb:
                self.state["training_refused"] = f"workspace uses {used:.0f} MB > disk budget {b.disk_mb:.0f} MB"
                return self.state["training_refused"]
        self.state["training_refused"] = None
        since = self.state.get("last_train_at", 0.0)
        envs = [t.env] if t.env else list(self.envs)
        new = sum(self.lib.count(env=s, first_success=False, since=since) for s in envs)
        if new < t.min_new_failures:
            return f"{new} new failed first attempts since the last training (< {t.min_new_failures})"
        return None

    def _registered_since(self, t0: float) -> Any:
        for v in reversed(self.lib.list_model_versions()):
            if v.status == "candidate" and v.created_at >= t0:
                return v
        return None

    async def maybe_train(self, cur: dict[str, Any]) -> str | None:
        from trainer.train import NotEnoughDataError

        t = self.cfg.training
        resuming = cur.get("train_started_at") is not None
        if resuming:
            found = self._registered_since(cur["train_started_at"])
            if found is not None:
                self.event("training_recovered", version=found.id)
                return self._after_training(cur, found)
        else:
            blocker = self.training_blocker()
            if blocker:
                cur["record"]["training"] = {"skipped": blocker}
                self.event("training_skipped", cycle=cur["cycle"], reason=blocker)
                return None
            cur["train_started_at"] = time.time()
            self.save()
        train = load_plugin(t.trainer) if t.trainer else (self.train_fn or _default_train)

        def progress(step: int, total: int, logs: dict[str, float]) -> None:
            if self.stopping or control.stop_requested(self.workspace):
                raise StopTraining(f"stopped at step {step}/{total}")

        kwargs = dict(steps=t.steps, env=t.env, overrides=t.overrides or None, progress=progress)
        self.event("training_started", cycle=cur["cycle"], method=t.method, steps=t.steps, resume=resuming)
        try:
            try:
                mv = await asyncio.to_thread(train, self.lib, t.method, resume=resuming, **kwargs)
            except FileNotFoundError:
                if not resuming:
                    raise
                mv = await asyncio.to_thread(train, self.lib, t.method, resume=False, **kwargs)
        except StopTraining as e:
            self.request_stop(self.stopping or "stop requested")
            self.event("training_interrupted", cycle=cur["cycle"], detail=str(e))
            return None
        except NotEnoughDataError as e:
            cur["record"]["training"] = {"skipped": str(e)}
            cur["train_started_at"] = None
            self.event("training_skipped", cycle=cur["cycle"], reason=str(e))
            return None
        return self._after_training(cur, mv)

    def _after_training(self, cur: dict[str, Any], mv: Any) -> str:
        steps = int(mv.metrics.get("steps", self.cfg.training.steps))
        self.state["totals"]["training_steps"] += steps
        self.state["totals"]["trainings"] += 1
        self.state["last_train_at"] = cur["train_started_at"]
        info = {"version": mv.id, "method": mv.method, "steps": steps, "metrics": mv.metrics, "at": time.time()}
        cur["record"]["training"] = info
        self.state["last_training"] = info
        for key, value in mv.metrics.items():
            self.scalar(f"train/{key.removeprefix('train/')}", value, cur["cycle"])
        self.event("trained", cycle=cur["cycle"], version=mv.id, steps=steps)
        return mv.id

    # ----- gate -----
    async def evaluate_version(self, version_id: str) -> tuple[dict[str, Any], dict[str, float]]:
        from agent.evaluate import evaluate
        from trainer.gate import TaskOutcome

        g = self.cfg.gate
        self.serve(version_id)
        per_env = curriculum.allocate(g.eval_size, dict.fromkeys(self.envs, 1.0))
        outcomes: dict[str, Any] = {}
        for spec, n in per_env.items():
            if not n:
                continue
            res = await evaluate(self.policy, self.envs[spec], n, seed=g.eval_seed, max_attempts=g.max_attempts,
                                 max_tokens=g.max_tokens, concurrency=self.cfg.concurrency, library=None)
            for tid, first, final in zip(res.task_ids, res.first, res.final, strict=True):
                outcomes.setdefault(tid, TaskOutcome(bool(first), bool(final)))
        n = len(outcomes) or 1
        acc = {"first": sum(o.first for o in outcomes.values()) / n, "final": sum(o.final for o in outcomes.values()) / n,
               "n": len(outcomes)}
        return outcomes, acc

    async def gate(self, cur: dict[str, Any]) -> None:
        from trainer import registry
        from trainer.gate import evaluate_gate

        cand = self.lib.get_model_version(cur["candidate"])
        if cand.status != "candidate":  # the gate was applied before a crash
            self.serve(self.lib.serving_version().id)
            return
        current = self.lib.serving_version()
        t0 = time.time()
        cand_out, cand_acc = await self.evaluate_version(cand.id)
        curr_out, curr_acc = await self.evaluate_version(current.id)
        g = self.cfg.gate
        decision = evaluate_gate(cand_out, curr_out, candidate_id=cand.id, current_id=current.id, primary=g.primary,
                                 margin=g.margin, drop_unpaired=True)
        for vid, acc in ((cand.id, cand_acc), (current.id, curr_acc)):
            self.state["accuracy_by_version"][vid] = {**acc, "cycle": cur["cycle"]}
            self.scalar(f"eval/{vid}/{g.primary}", acc[g.primary], cur["cycle"])
        metrics = (cur["record"].get("training") or {}).get("metrics") or cand.metrics
        hist = self.state["training_history"]
        hist.append({"cycle": cur["cycle"], "version": cand.id,
                     "train_reward": _metric(metrics, ("reward_mean", "retry_success_rate_mean", "rewards/accuracies_mean")),
                     "heldout_accuracy": cand_acc[g.primary], "kl": _metric(metrics, ("kl_mean", "kl_last", "kl")),
                     "self_reward": (cur["record"].get("collected") or {}).get("self_reward")})
        w = self.cfg.tripwires
        trip = tripwires.check(hist, window=w.window, min_reward_rise=w.min_reward_rise,
                               min_accuracy_drop=w.min_accuracy_drop, kl_factor=w.kl_factor, kl_min=w.kl_min) if w.enabled else None
        if trip:
            self.lib.set_model_status(cand.id, "rejected", note=f"tripwire: {trip}")
            window_ids = {h["version"] for h in hist[-w.window:]}
            rolled = []
            while (sv := self.lib.serving_version()).status == "promoted" and sv.id in window_ids:
                rolled.append(sv.id)
                registry.rollback(self.lib)
            self.state["training_halted"] = trip
            self.event("tripwire", cycle=cur["cycle"], reason=trip, rolled_back=rolled)
        else:
            registry.apply_gate(self.lib, cand.id, decision)
        self.serve(self.lib.serving_version().id)
        gate_record = {"candidate": cand.id, "current": current.id, "promote": bool(decision.promote and not trip),
                       "reason": decision.reason, "tripwire": trip, "candidate_accuracy": cand_acc,
                       "current_accuracy": curr_acc, "decision": decision.model_dump(mode="json"),
                       "seconds": round(time.time() - t0, 1), "at": time.time()}
        cur["record"]["gate"] = gate_record
        self.state["last_gate"] = gate_record
        self.event("gate", cycle=cur["cycle"], promote=gate_record["promote"], reason=decision.reason)

    # ----- finish -----
    def finish(self, cur: dict[str, Any]) -> None:
        record = {"cycle": cur["cycle"], "run_id": cur["run_id"], "seconds": round(time.time() - cur["started_at"], 1),
                  "serving_version": self.policy.version, **cur.get("record", {})}
        self.lib.finish_run(cur["run_id"], record)
        st = self.state
        st["history"] = [*st["history"], record][-HISTORY:]
        st["cycles_completed"] = cur["cycle"] + 1
        cur["phase"] = "done"
        collected = record.get("collected", {})
        for key in ("first_try_accuracy", "final_accuracy"):
            self.scalar(f"collect/{key}", collected.get(key), cur["cycle"])
        self.scalar("totals/episodes", st["totals"]["episodes"], cur["cycle"])
        self.save()
        if self.writer is not None:
            self.writer.flush()
        self.event("cycle_finished", cycle=cur["cycle"], seconds=record["seconds"], serving=self.policy.version)


def _metric(metrics: dict[str, Any], names: tuple[str, ...]) -> float | None:
    for name in names:
        for key in (name, f"train/{name}"):
            if isinstance(metrics.get(key), int | float):
                return float(metrics[key])
    return None


def _default_train(lib: Any, method: str, **kwargs: Any) -> Any:
    from trainer.train import train

    return train(lib, method, **kwargs)


def run_daemon(workspace: str | Path, config: DaemonConfig) -> str:
    """Hold the workspace lock and run the loop until stopped; returns the stop reason."""
    with control.WorkspaceLock(workspace):
        control.clear_stop(workspace)
        return asyncio.run(Daemon(workspace, config).run())
