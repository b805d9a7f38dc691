"""What the dashboard shows, computed from the workspace: learning curves, episodes, the daemon's status.

Pure functions over the library (public API only), the daemon's ``state.json`` and ``served.db``:

- :func:`learning_curves`: per held-out eval setting (env, n, seed, attempts), one point per model
  version in registry order — first-try and final accuracy with Wilson 95% intervals — from the eval
  results ``selfevolve eval`` stores on each version (:func:`agent.evaluate.store_result`), plus the
  daemon gate's pooled held-out accuracy per version (``accuracy_by_version`` in its state).
- :func:`newest_episodes`: the library lists episodes oldest first, so the newest ``limit`` are found
  by bisecting on ``since`` with ``count`` (≈40 indexed COUNTs) instead of reading everything.
- :func:`daemon_status`: the same fields as ``selfevolve status --json``.

    python -c "from agent.serve.insights import daemon_status; print(daemon_status('.selfevolve'))"
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from trainer.gate import wilson


def _point(mv: Any, first: float, final: float, n: int, first_ci=None, final_ci=None) -> dict[str, Any]:
    k1, k2 = round(first * n), round(final * n)
    return {"version": mv.id, "status": mv.status, "method": mv.method, "created_at": mv.created_at, "n": n,
            "first": first, "first_ci": list(first_ci or wilson(k1, n)),
            "final": final, "final_ci": list(final_ci or wilson(k2, n))}


def learning_curves(library: Any, daemon_state: dict[str, Any] | None) -> list[dict[str, Any]]:
    """``[{"key", "env", "label", "points": [...]}]``: one curve per eval setting, points in version order."""
    versions = library.list_model_versions()
    curves: dict[str, dict[str, Any]] = {}
    for mv in versions:
        for key, entry in sorted((mv.metrics.get("eval") or {}).items()):
            env = entry.get("env", key.split("|", 1)[0])
            label = f"{env} (n={entry.get('n')}, seed={entry.get('seed')})"
            curve = curves.setdefault(key, {"key": key, "env": env, "label": label, "source": "selfevolve eval",
                                            "points": []})
            curve["points"].append(_point(mv, entry["first_try_accuracy"], entry["final_accuracy"], int(entry["n"]),
                                          entry.get("first_try_ci95"), entry.get("final_ci95")))
    by_id = {mv.id: mv for mv in versions}
    gate = (daemon_state or {}).get("accuracy_by_version") or {}
    points = [_point(by_id[v], acc["first"], acc["final"], int(acc.get("n", 0)))
              for v, acc in gate.items() if v in by_id and acc.get("n")]
    if points:
        points.sort(key=lambda p: p["created_at"])
        curves["daemon"] = {"key": "daemon", "env": "all daemon envs", "label": "daemon gate (pooled held-out tasks)",
                            "source": "daemon", "points": points}
    return list(curves.values())


def newest_episodes(library: Any, limit: int, **filters: Any) -> list[Any]:
    """The ``limit`` most recent episodes matching ``filters``, newest first."""
    total = library.count(**filters)
    if total <= limit:
        return list(reversed(library.episodes(**filters)))
    lo, hi = 0.0, time.time() + 1.0  # count(since=lo) >= limit > count(since=hi)
    for _ in range(48):
        mid = (lo + hi) / 2
        if library.count(since=mid, **filters) >= limit:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-4:
            break
    found = library.episodes(since=lo, **filters)
    return list(reversed(found))[:limit]


def env_table(library: Any) -> dict[str, dict[str, Any]]:
    """Per env: episodes, first-try / final accuracy, recovered — from COUNT queries (the dashboard polls it;
    ``library.stats()`` also re-reads every self-reward episode, which grows with served feedback)."""
    status = library.index_status()  # per-env SQLite counts (plus the index's, which we do not need here)
    envs = status.get("envs") or {} if status.get("behind") is not None else library.stats()["envs"]
    out = {}
    for env in sorted(envs):
        n = library.count(env=env)
        if not n:
            continue
        first, final = library.count(env=env, first_success=True), library.count(env=env, success=True)
        both = library.count(env=env, success=True, first_success=True)
        out[env] = {"episodes": n, "first_successes": first, "successes": final, "recovered": final - both,
                    "first_try_accuracy": first / n, "final_accuracy": final / n}
    return out


def episode_row(ep: Any, score: float | None = None) -> dict[str, Any]:
    question = ep.task.question
    return {"id": ep.id, "env": ep.env, "model_version": ep.model_version, "created_at": ep.created_at,
            "success": ep.success, "first_success": ep.first_success, "attempts": len(ep.attempts),
            "feedback_source": ep.feedback_source, "purpose": ep.metadata.get("purpose"), "score": score,
            "question": question if len(question) <= 200 else question[:197] + "...", "error": ep.error}


def episode_detail(ep: Any) -> dict[str, Any]:
    return {**ep.model_dump(mode="json"), "success": ep.success, "first_success": ep.first_success,
            "recovered": ep.recovered, "tokens": ep.tokens}


def daemon_status(workspace: str | Path) -> dict[str, Any]:
    """The daemon's state as ``selfevolve status --json`` reports it, or ``{"present": False}``."""
    from agent.daemon import control

    ws = Path(workspace)
    if not (ws / "daemon" / "state.json").exists():
        return {"present": False}
    state = control.read_state(ws) or {}
    running = control.lock_held(ws)
    status = "running" if running else state.get("status")
    if not running and state.get("status") == "running":
        status = "dead (killed or crashed; restart it to resume)"
    keys = ("stop_reason", "serving_version", "cycles_completed", "totals", "accuracy_by_version", "last_training",
            "last_gate", "monitors", "training_halted", "training_refused", "budget", "wall_time_s", "last_crash")
    return {"present": True, "running": running, "status": status, "phase": (state.get("current") or {}).get("phase"),
            "cycle": (state.get("current") or {}).get("cycle"), "stop_requested": control.stop_requested(ws),
            "updated": control.state_path(ws).stat().st_mtime, **{k: state.get(k) for k in keys}}
