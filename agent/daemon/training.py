"""The train phase: decide whether to train, run the trainer in a thread, recover after a crash.

Design decisions
- Training is skipped (and the reason recorded) when disabled, halted by a tripwire, over the disk
  budget, or when fewer than ``min_new_failures`` failed first attempts arrived since the last training.
- ``train_started_at`` in the cycle's state marks training in progress. A restart in ``train`` first
  looks for a candidate registered since then (the registry writes the adapter before registering, so a
  registered candidate is complete; one killed between its rename and its row was adopted by
  ``registry.recover`` when the daemon opened), then resumes the trainer from its checkpoint
  (``resume=True``; without a checkpoint it trains afresh).
- Stop: the trainer's progress callback raises :class:`StopTraining` at a step boundary; TRL's
  checkpoints let the next start resume.
- Training is :func:`agent.cycle.train_candidate` with ``training.trainer`` (a ``python:`` plugin) if
  set, else the ``train_fn`` given to the daemon (tests), else :func:`trainer.train.train`;
  ``training.launcher = "accelerate"`` runs it under ``accelerate launch`` (:mod:`trainer.launch`), the
  daemon still registering the candidate in its own process.

Used as a mixin of :class:`agent.daemon.loop.Daemon`; run with ``selfevolve daemon``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.daemon import control
from agent.daemon.config import DaemonConfig, load_plugin
from trainer.crashpoints import crashpoint

if TYPE_CHECKING:
    from environments import Environment
    from memory.protocol import Library
    from memory.records import ModelVersion


class StopTraining(Exception):
    """Raised from the trainer's progress callback when a stop was requested."""


class TrainPhase:
    """``training_blocker``, ``maybe_train`` and the bookkeeping after a training (mixin of ``Daemon``)."""

    workspace: Path
    cfg: DaemonConfig
    state: dict[str, Any]
    envs: dict[str, Environment]
    lib: Library
    train_fn: Callable[..., ModelVersion] | None
    stopping: str | None

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

    def _registered_since(self, t0: float) -> ModelVersion | None:
        for v in reversed(self.lib.list_model_versions()):
            if v.status == "candidate" and v.created_at >= t0:
                return v
        return None

    async def maybe_train(self, cur: dict[str, Any]) -> str | None:
        from agent.cycle import Skipped, train_candidate

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
            crashpoint("train.started")

        def progress(step: int, total: int, logs: dict[str, float]) -> None:
            if self.stopping or control.stop_requested(self.workspace):
                raise StopTraining(f"stopped at step {step}/{total}")

        kwargs = dict(steps=t.steps, env=t.env, overrides=t.overrides or None, progress=progress,
                      train_fn=load_plugin(t.trainer) if t.trainer else self.train_fn, launcher=t.make_launcher())
        self.event("training_started", cycle=cur["cycle"], method=t.method, steps=t.steps, resume=resuming)
        try:
            try:
                result = await train_candidate(self.lib, t.method, resume=resuming, **kwargs)
            except FileNotFoundError:  # no checkpoint to resume from: train afresh
                if not resuming:
                    raise
                result = await train_candidate(self.lib, t.method, resume=False, **kwargs)
        except StopTraining as e:
            self.request_stop(self.stopping or "stop requested")
            self.event("training_interrupted", cycle=cur["cycle"], detail=str(e))
            return None
        if isinstance(result, Skipped):
            cur["record"]["training"] = {"skipped": result.reason}
            cur["train_started_at"] = None
            self.event("training_skipped", cycle=cur["cycle"], reason=result.reason)
            return None
        return self._after_training(cur, result)

    def _after_training(self, cur: dict[str, Any], mv: ModelVersion) -> str:
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
