"""The daemon's durable state and its bookkeeping: ``state.json``, budgets, history, TensorBoard.

Design decisions
- ``state.json`` is the one snapshot ``selfevolve status`` reads; :meth:`Bookkeeping.save` stamps the
  wall time and budget use into it and replaces it atomically (``control.write_json_atomic``), so a
  kill -9 at any instant leaves either the old or the new snapshot.
- Wall time is cumulative over restarts: ``_wall_base`` (read back from the previous state) plus this
  session's elapsed time. Budgets are checked between steps, never inside one.
- ``history`` keeps the last ``HISTORY`` cycle records; the full record of every cycle is in SQLite
  (``Run(kind="daemon")``, written by :meth:`Bookkeeping.finish`).

Used as a mixin of :class:`agent.daemon.loop.Daemon`; run with ``selfevolve daemon``.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.daemon import control
from agent.daemon.config import DaemonConfig
from trainer.crashpoints import crashpoint

if TYPE_CHECKING:
    from agent.policy.base import Policy
    from memory.protocol import Library

STATE_VERSION = 1
HISTORY = 50


def new_state() -> dict[str, Any]:
    return {
        "state_version": STATE_VERSION, "status": "starting", "stop_reason": None,
        "wall_time_s": 0.0, "cycles_completed": 0, "current": None, "last_train_at": 0.0,
        "totals": {"episodes": 0, "training_steps": 0, "trainings": 0, "collect_seconds": 0.0},
        "serving_version": "base", "last_training": None, "last_gate": None, "monitors": None,
        "training_history": [], "accuracy_by_version": {}, "training_halted": None, "training_refused": None,
        "budget": {}, "history": [], "last_crash": None,
    }


class Bookkeeping:
    """State snapshot, budgets, TensorBoard scalars and the cycle's ``finish`` step (mixin of ``Daemon``)."""

    workspace: Path
    cfg: DaemonConfig
    state: dict[str, Any]
    lib: Library
    policy: Policy
    writer: Any
    _session_start: float
    _wall_base: float
    _state_loaded: bool

    def save(self) -> None:
        self.state["wall_time_s"] = self._wall_base + (time.time() - self._session_start)
        self.state["budget"] = self.budget_use()
        control.write_json_atomic(control.state_path(self.workspace), self.state)

    def record_crash(self, exc: BaseException) -> None:
        """Say that the daemon is dying of ``exc``: a ``crashed`` event and ``status: crashed`` in state.json.

        Best effort (a full disk may be why it crashed); the exception propagates either way. If the crash
        came before state.json was read, the file on disk is patched, never replaced by a blank state."""
        crash = {"at": time.time(), "error": f"{type(exc).__name__}: {exc}",
                 "phase": (self.state.get("current") or {}).get("phase"),
                 "traceback": "".join(traceback.format_exception(exc))}
        with contextlib.suppress(Exception):
            self.event("crashed", **crash)
        marks = {"status": "crashed", "stop_reason": f"crashed: {crash['error']}", "last_crash": crash}
        try:
            if self._state_loaded:
                self.state.update(marks)
                self.save()
            else:
                previous = control.read_state(self.workspace)
                if previous is not None:
                    control.write_json_atomic(control.state_path(self.workspace), {**previous, **marks})
        except Exception:  # noqa: BLE001 - reporting must not mask the crash being reported
            pass

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

    # ----- finish -----
    def finish(self, cur: dict[str, Any]) -> None:
        record = {"cycle": cur["cycle"], "run_id": cur["run_id"], "seconds": round(time.time() - cur["started_at"], 1),
                  "serving_version": self.policy.version, **cur.get("record", {})}
        self.lib.finish_run(cur["run_id"], record)
        crashpoint("cycle.finishing")
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
