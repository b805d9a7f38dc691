"""The gate phase: score candidate and serving version on held-out tasks, then promote, keep or roll back.

Design decisions
- Both versions are scored on the same held-out tasks with the same policy object (adapters swapped
  with ``set_adapter``), greedy, without memory hints, and the eval episodes are not recorded (held-out
  answers must never become training data or hints). The decision is :func:`trainer.gate.evaluate_gate`
  on paired per-task outcomes.
- Each gate appends to ``training_history`` (train reward, held-out accuracy, KL, self-reward); the SRT
  tripwires read it. A trip rejects the candidate, rolls back while the serving version is one promoted in the window, and
  halts training for good (``training_halted``).
- Restart in ``gate``: if the candidate's status is no longer ``candidate`` the gate was applied before
  the crash, and only the serving adapter is restored.

Used as a mixin of :class:`agent.daemon.loop.Daemon`; run with ``selfevolve daemon``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from agent.daemon import curriculum, tripwires
from agent.daemon.config import DaemonConfig

if TYPE_CHECKING:
    from agent.policy.base import Policy
    from environments import Environment
    from memory.protocol import Library


class GatePhase:
    """``evaluate_version`` and ``gate`` (mixin of ``Daemon``)."""

    cfg: DaemonConfig
    state: dict[str, Any]
    envs: dict[str, Environment]
    lib: Library
    policy: Policy

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


def _metric(metrics: dict[str, Any], names: tuple[str, ...]) -> float | None:
    for name in names:
        for key in (name, f"train/{name}"):
            if isinstance(metrics.get(key), int | float):
                return float(metrics[key])
    return None
