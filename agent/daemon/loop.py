"""The self-improvement loop: collect → (train → evaluate → gate → promote/keep) → collect …

    selfevolve daemon --workspace ws --config docker/daemon.toml     # foreground; SIGTERM/SIGINT stop it
    selfevolve status --workspace ws [--json]
    selfevolve stop --workspace ws

This module holds the cycle state machine (:class:`Daemon`: setup, ``run``, ``cycle``) and the stop
plumbing; the phases are mixins in their own modules: ``collect`` (curriculum, episodes, monitors),
``training`` (blocker, trainer, crash recovery), ``gate`` (held-out evaluation, promotion, tripwires)
and ``state`` (state.json, budgets, history, TensorBoard, ``finish``).

Design decisions
- Durable state is SQLite (episodes, runs, model versions) plus ``daemon/state.json`` (replaced
  atomically). Each cycle is a ``Run(kind="daemon")``; its episodes carry the run id and are recorded
  one by one as they finish, so a restart after kill -9 counts what the cycle already has and collects
  only the rest (nothing lost, nothing duplicated).
- The state file names the phase in progress (collect, train, gate, finish); a restart resumes that
  phase (see the phase modules for how each one recovers).
- Stop (SIGTERM, SIGINT, ``selfevolve stop``): a flag checked between chunks of episodes, inside the
  trainer's progress callback (training stops at a step boundary; TRL's checkpoints let it resume) and
  between phases; then the state is saved and the process exits 0. A second signal kills at once.
  The sleep between cycles (``sleep_s``) is a wait on an event the stop sets (a signal wakes it at
  once) that also polls the stop file and the budgets every ``STOP_POLL_S``; it never waits it out.
- Crash: an uncaught exception is recorded before it propagates: a ``crashed`` event with the traceback
  and ``status: crashed`` plus ``last_crash`` in state.json (``selfevolve status`` shows both), so a
  dead daemon is never reported as ``running``. The phase in progress is kept: a restart resumes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.daemon import control
from agent.daemon.collect import CollectPhase
from agent.daemon.config import DaemonConfig, load_plugin
from agent.daemon.gate import GatePhase
from agent.daemon.state import Bookkeeping, new_state
from agent.daemon.training import StopTraining, TrainPhase
from trainer import registry
from trainer.crashpoints import crashpoint

if TYPE_CHECKING:
    from agent.policy.base import Policy
    from environments import Environment
    from memory.protocol import Library
    from memory.records import ModelVersion

__all__ = ["Daemon", "StopTraining", "new_state", "run_daemon"]

log = logging.getLogger(__name__)

STOP_POLL_S = 0.5
"""How often the sleep between cycles re-reads the stop file and the budgets (a signal wakes it at once)."""


class Daemon(CollectPhase, TrainPhase, GatePhase, Bookkeeping):
    """One daemon process on one workspace: ``await Daemon(ws, cfg).run()`` (``run_daemon`` adds the lock)."""

    def __init__(self, workspace: str | Path, config: DaemonConfig, *, train_fn: Callable[..., ModelVersion] | None = None) -> None:
        from environments import get_environment

        self.workspace = Path(workspace)
        self.cfg = config
        self.envs: dict[str, Environment] = {}  # canonical spec -> Environment
        self.weights = {}  # canonical spec -> weight
        for entry in config.environments:
            env = get_environment(entry.spec)
            self.envs[env.spec] = env
            self.weights[env.spec] = entry.weight
        self.train_fn = train_fn
        self.stopping: str | None = None
        self.lib: Library = None  # type: ignore[assignment]  # set by open()
        self.policy: Policy = None  # type: ignore[assignment]  # set by open()
        self.writer: Any = None
        self.state: dict[str, Any] = new_state()
        self._session_start = time.time()
        self._wall_base = 0.0
        self._state_loaded = False  # True once open() has read state.json (a crash before must not overwrite it)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None  # set by a stop: ends the sleep between cycles

    # ----- plumbing -----
    def event(self, name: str, **fields: Any) -> None:
        control.append_log(self.workspace, name, **fields)
        log.info("%s %s", name, {k: v for k, v in fields.items() if not isinstance(v, dict | list)})

    def request_stop(self, reason: str) -> None:
        if self.stopping is None:
            self.stopping = reason
            self.event("stop_requested", reason=reason)
        # from a signal handler, the trainer's thread or the loop: call_soon_threadsafe also wakes the selector
        if self._loop is not None and self._wake is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    def _on_signal(self, signum: int, frame: Any) -> None:
        # `selfevolve stop` writes its request before it signals: name that request, not the signal, whichever
        # the loop notices first, so the recorded reason does not depend on a race.
        self.request_stop(control.stop_requested(self.workspace) or f"signal {signal.Signals(signum).name}")
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
        self._state_loaded = True
        self.state.update(status="running", stop_reason=None)
        self.sync_index()
        self.recover_registry()
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

    def recover_registry(self) -> None:
        """Repair what a kill left in the model registry (orphan adapter dirs, .tmp-*, a half-done promote)
        before anything asks for a version id; safe here because this process holds the workspace lock."""
        rec = registry.recover(self.lib, self.workspace)
        if not rec.empty():
            self.event("registry_recovered", **vars(rec))

    def load_policy(self, version: str | None = None) -> Policy:
        # Every model spec form, python:<module>:<factory> plug-ins included, goes through load_policy.
        from agent.serving import serving_policy

        return serving_policy(self.cfg.model, self.lib, version)

    def serve(self, version_id: str) -> None:
        """Hot-swap the serving policy to ``version_id`` (a no-op if already served)."""
        mv = self.lib.get_model_version(version_id)
        if self.policy.version != mv.id:
            self.policy.set_adapter(mv.id, mv.adapter_path)
        self.state["serving_version"] = mv.id

    def close(self) -> None:
        self.close_ray()
        if self.writer is not None:
            self.writer.close()
        if self.lib is not None:
            self.lib.close()

    # ----- the loop -----
    async def run(self) -> str:
        """Run cycles until a stop or a budget; returns the stop reason."""
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.open()
            self.event("started", cycles_completed=self.state["cycles_completed"], serving=self.policy.version,
                       resuming=(self.state.get("current") or {}).get("phase"))
            self.serve(self.lib.serving_version().id)
            self.save()
            while not self.check_stop():
                await self.cycle()
                if self.cfg.sleep_s:
                    await self.pause(self.cfg.sleep_s)
            self.state.update(status="stopped", stop_reason=self.stopping)
            self.save()
            self.event("stopped", reason=self.stopping)
            return self.stopping or "stopped"
        except Exception as e:
            self.record_crash(e)
            raise
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
            if self.policy is not None:
                await self.policy.aclose()
            self.close()

    async def pause(self, seconds: float) -> None:
        """The sleep between cycles, cut short by a stop: a signal or ``request_stop`` sets ``_wake``; the
        stop file (written by ``selfevolve stop`` even when it cannot signal) and budgets are polled."""
        deadline = time.monotonic() + seconds
        while not self.check_stop() and (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(left, STOP_POLL_S))

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
            crashpoint("gate.applied")
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


def run_daemon(workspace: str | Path, config: DaemonConfig) -> str:
    """Check the training config, hold the workspace lock and run the loop until stopped; returns the stop reason."""
    from agent.daemon.preflight import check_training

    check_training(config)  # ConfigError now, not after the first collection cycle
    with control.WorkspaceLock(workspace):
        control.clear_stop(workspace)
        return asyncio.run(Daemon(workspace, config).run())
