"""The gate phase: score candidate and serving version on held-out tasks, then promote, keep or roll back.

Design decisions
- The phase is :func:`agent.cycle.gate` (the one cycle the CLI and the experiments use too): both
  versions scored on the same held-out tasks (:meth:`GatePhase.held_out`, ``gate.eval_size`` split
  across the environments) with the same policy object (adapters swapped with ``set_adapter``), greedy,
  without memory hints; the eval episodes are not recorded. The decision is
  :func:`trainer.gate.evaluate_gate` on paired per-task outcomes (unpaired tasks left out) and is kept on
  the candidate (``metrics["gate"]``).
- Each gate appends to ``training_history`` (train reward, held-out accuracy, KL, self-reward); the SRT
  tripwires read it and veto the promotion. A trip rejects the candidate, rolls back while the serving
  version is one promoted in the window, and halts training for good (``training_halted``).
- Restart in ``gate``: if the candidate's status is no longer ``candidate`` the gate was applied before
  the crash, and only the serving adapter is restored.
- A promotion counts only once the policy serves it. If ``set_adapter`` fails for the just-promoted
  candidate (a ``pool:`` server refused its adapter), the promotion is undone (``registry.rollback``: the
  previous version serves again, the candidate is retired as rolled back), a ``promotion_undone`` event
  says why, and the gate record has ``promote: false``. A failure while the candidate is being evaluated
  propagates (a crash, recorded; nothing was promoted, and a restart retries the gate).

Used as a mixin of :class:`agent.daemon.loop.Daemon`; run with ``selfevolve daemon``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from agent.cycle import Evaluation, GateRule, HeldOut, evaluate_version
from agent.cycle import gate as run_gate
from agent.daemon import tripwires
from agent.daemon.config import DaemonConfig

if TYPE_CHECKING:
    from agent.policy.base import Policy
    from environments import Environment
    from memory.protocol import Library


class GatePhase:
    """``held_out``, ``held_out_evaluation`` and ``gate`` (mixin of ``Daemon``)."""

    cfg: DaemonConfig
    state: dict[str, Any]
    envs: dict[str, Environment]
    lib: Library
    policy: Policy

    def held_out(self) -> HeldOut:
        g = self.cfg.gate
        return HeldOut.shared(self.envs.values(), g.eval_size, seed=g.eval_seed, max_attempts=g.max_attempts,
                              max_tokens=g.max_tokens, concurrency=self.cfg.concurrency)

    async def held_out_evaluation(self, version_id: str) -> Evaluation:
        """Serve ``version_id`` on the daemon's policy and score it on the gate's held-out tasks."""
        self.serve(version_id)
        return await evaluate_version(self.policy, self.held_out())

    def _tripwire(self, cur: dict[str, Any], candidate: Evaluation) -> str | None:
        """Append this training to ``training_history``; the tripwire's reason if the history trips one."""
        g, w = self.cfg.gate, self.cfg.tripwires
        metrics = (cur["record"].get("training") or {}).get("metrics") or self.lib.get_model_version(candidate.version).metrics
        hist = self.state["training_history"]
        hist.append({"cycle": cur["cycle"], "version": candidate.version,
                     "train_reward": _metric(metrics, ("reward_mean", "retry_success_rate_mean", "rewards/accuracies_mean")),
                     "heldout_accuracy": candidate.accuracy()[g.primary], "kl": _metric(metrics, ("kl_mean", "kl_last", "kl")),
                     "self_reward": (cur["record"].get("collected") or {}).get("self_reward")})
        if not w.enabled:
            return None
        return tripwires.check(hist, window=w.window, min_reward_rise=w.min_reward_rise,
                               min_accuracy_drop=w.min_accuracy_drop, kl_factor=w.kl_factor, kl_min=w.kl_min)

    async def gate(self, cur: dict[str, Any]) -> None:
        from trainer import registry

        cand = self.lib.get_model_version(cur["candidate"])
        if cand.status != "candidate":  # the gate was applied before a crash
            self.serve_after_gate(cand.id)
            return
        t0, g = time.time(), self.cfg.gate
        outcome = await run_gate(self.lib, cand.id, self.held_out_evaluation, veto=lambda ev: self._tripwire(cur, ev),
                                 rule=GateRule(primary=g.primary, margin=g.margin, drop_unpaired=True))
        decision, trip = outcome.decision, outcome.veto
        accuracy = {ev.version: ev.accuracy() for ev in (outcome.candidate, outcome.current)}
        for vid, acc in accuracy.items():
            self.state["accuracy_by_version"][vid] = {**acc, "cycle": cur["cycle"]}
            self.scalar(f"eval/{vid}/{g.primary}", acc[g.primary], cur["cycle"])
        if trip:
            window_ids = {h["version"] for h in self.state["training_history"][-self.cfg.tripwires.window:]}
            rolled = []
            while (sv := self.lib.serving_version()).status == "promoted" and sv.id in window_ids:
                rolled.append(sv.id)
                registry.rollback(self.lib)
            self.state["training_halted"] = trip
            self.event("tripwire", cycle=cur["cycle"], reason=trip, rolled_back=rolled)
        undone = self.serve_after_gate(cand.id)
        gate_record = {"candidate": cand.id, "current": outcome.current.version,
                       "promote": outcome.promoted and undone is None, "promotion_undone": undone,
                       "reason": decision.reason, "tripwire": trip, "candidate_accuracy": accuracy[cand.id],
                       "current_accuracy": accuracy[outcome.current.version], "decision": decision.model_dump(mode="json"),
                       "seconds": round(time.time() - t0, 1), "at": time.time()}
        cur["record"]["gate"] = gate_record
        self.state["last_gate"] = gate_record
        self.event("gate", cycle=cur["cycle"], promote=gate_record["promote"], reason=decision.reason)

    def serve_after_gate(self, candidate_id: str) -> str | None:
        """Serve the registry's serving version; if that is the just-promoted candidate and the policy cannot
        serve it, undo the promotion, serve the restored version and return why (else None)."""
        from trainer import registry

        serving = self.lib.serving_version()
        try:
            self.serve(serving.id)
            return None
        except Exception as e:  # noqa: BLE001 - whatever refused it, the candidate is not served: undo, report
            if serving.id != candidate_id:
                raise
            why = f"{type(e).__name__}: {e}"
        restored = registry.rollback(self.lib)
        self.event("promotion_undone", version=candidate_id, serving=restored.id, error=why)
        self.serve(restored.id)
        return why


def _metric(metrics: dict[str, Any], names: tuple[str, ...]) -> float | None:
    for name in names:
        for key in (name, f"train/{name}"):
            if isinstance(metrics.get(key), int | float):
                return float(metrics[key])
    return None
