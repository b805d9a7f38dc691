"""The learning experiment's settings presets and results file (pure): load/resume, rounds, cumulative compute, series.

The file is ``<workspace>/results.json``: ``{"settings", "base": {env: eval}, "methods": {method: {"rounds": [...]}}}``.
Resume refuses a file made with other measurement settings (``MEASUREMENT_KEYS``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# "memory" is retrieval only (no weight update); every other name is a training method (trainer.methods).
MEMORY = "memory"
# What the experiment runs by default (any registered training method may be named with --methods).
METHODS = ("grpo-reflection", "grpo", "sft", MEMORY)
# The target first; lenient `arithmetic` reads the same tasks' answers without the format, so it separates
# "learned the answer format" from "learned to add"; countdown is the forgetting check.
DEFAULT_ENVS = ("arithmetic:answer_format=strict", "countdown", "arithmetic")
# The 135M boundary band: ~46% right read leniently, 0% strict; the partial reward for an untagged right number
# gives GRPO a gradient toward the format (success stays strict). Same held-out tasks as the strict eval env.
DEFAULT_TRAIN_ENV = "arithmetic:answer_format=strict,untagged_credit=0.5"
FULL = dict(rounds=3, episodes_per_round=32, steps_per_round=16, eval_n=48, max_tokens=48, budget_minutes=15.0)
QUICK = dict(rounds=1, episodes_per_round=8, steps_per_round=1, eval_n=8, max_tokens=48, budget_minutes=10.0)

# Settings that change what a number means; budget/rounds/methods may grow on resume.
MEASUREMENT_KEYS = ("model", "envs", "train_env", "episodes_per_round", "steps_per_round", "eval_n", "max_tokens")


def new_results(settings: dict[str, Any]) -> dict[str, Any]:
    return {"settings": settings, "base": {}, "methods": {}}


def load_results(path: Path, settings: dict[str, Any], resume: bool) -> dict[str, Any]:
    """The results file to continue (``resume``), else a fresh one. Refuses to mix different settings."""
    if not resume or not path.exists():
        return new_results(settings)
    results = json.loads(path.read_text())
    old = {k: v for k, v in results.get("settings", {}).items() if k in MEASUREMENT_KEYS}
    new = {k: v for k, v in settings.items() if k in MEASUREMENT_KEYS}
    if old != new:
        diff = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
        raise SystemExit(f"{path} was made with other settings ({diff}): use another --workspace or drop --resume")
    results["settings"] = {**results.get("settings", {}), **settings}
    return results



def rounds_of(results: dict[str, Any], method: str) -> list[dict[str, Any]]:
    return results["methods"].setdefault(method, {"rounds": []})["rounds"]


def round_done(results: dict[str, Any], method: str, r: int) -> bool:
    return any(x["round"] == r for x in results["methods"].get(method, {}).get("rounds", []))


def totals(results: dict[str, Any], method: str) -> dict[str, float]:
    """Cumulative compute of a method's finished rounds (zeros before the first)."""
    rs = results["methods"].get(method, {}).get("rounds", [])
    last = max(rs, key=lambda x: x["round"]) if rs else None
    return {k: (last["cumulative"][k] if last else 0) for k in ("seconds", "tokens", "steps", "episodes")}


def add_round(results: dict[str, Any], method: str, record: dict[str, Any]) -> None:
    before = totals(results, method)
    record["cumulative"] = {
        "seconds": before["seconds"] + record["collect"]["seconds"] + record["train"].get("seconds", 0.0),
        "tokens": before["tokens"] + record["collect"]["tokens"],
        "steps": before["steps"] + record["train"].get("steps", 0),
        "episodes": before["episodes"] + record["collect"]["episodes"],
    }
    rs = [x for x in rounds_of(results, method) if x["round"] != record["round"]]
    results["methods"][method]["rounds"] = sorted([*rs, record], key=lambda x: x["round"])


def series(results: dict[str, Any], method: str, env: str, metric: str = "first") -> list[dict[str, Any]]:
    """Points (compute, accuracy, CI, version) of one method on one env, the base first (at 0 compute)."""
    out = []
    base = results["base"].get(env)
    if base:
        out.append(_point(base, "base", {"seconds": 0, "tokens": 0, "steps": 0}, metric))
    for r in results["methods"].get(method, {}).get("rounds", []):
        if env in r.get("evals", {}):
            out.append(_point(r["evals"][env], r["version"], r["cumulative"], metric))
    return out


def _point(ev: dict[str, Any], version: str, cum: dict[str, Any], metric: str) -> dict[str, Any]:
    key = "first_try" if metric == "first" else "final"
    acc, ci = ev[f"{key}_accuracy"], ev[f"{key}_ci95"]
    return {"version": version, "minutes": cum["seconds"] / 60, "tokens": cum["tokens"], "steps": cum["steps"],
            "acc": acc, "lo": ci[0], "hi": ci[1], "outcomes": ev.get(metric, [])}
