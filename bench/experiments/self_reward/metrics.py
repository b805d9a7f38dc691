"""Pure statistics of the self-reward experiment: gap metrics from episodes, policy-version series, collapse detection.

No model, no I/O: everything here works on ``memory.records.Episode`` objects or on the results dict.
"""

from __future__ import annotations

from typing import Any

from trainer.gate import wilson  # the one definition of the 95% interval


def _rate(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson(k, n)
    return {"k": k, "n": n, "p": (k / n) if n else None, "lo": lo, "hi": hi}


def judged_pairs(episodes: list[Any], source: str) -> list[tuple[bool, bool, float, bool]]:
    """(self says correct, truth says correct, self reward, unreliable) per attempt that has a truth.

    For ``verifier`` the feedback is the truth. A self-reward attempt without ground truth (an env
    without a verifier) is skipped: there is nothing to measure it against.
    """
    from agent.feedback import UNRELIABLE

    out = []
    for ep in episodes:
        for a in ep.attempts:
            if source == "verifier":
                truth = a.feedback
            else:
                truth = a.ground_truth
                if truth is None:
                    continue
            out.append((bool(a.feedback.success), bool(truth.success), float(a.feedback.reward),
                        a.feedback.message.startswith(UNRELIABLE)))
    return out


def gap_metrics(pairs: list[tuple[bool, bool, float, bool]]) -> dict[str, Any]:
    """Self-reward success, true success, agreement and false-positive rate (with 95% Wilson CIs).

    >>> m = gap_metrics([(True, True, 1.0, False), (True, False, 1.0, False), (False, False, 0.0, True)])
    >>> m["self"]["k"], m["truth"]["k"], m["agreement"]["k"], m["fpr"]["k"], m["fpr"]["n"], m["unreliable"]
    (2, 1, 2, 1, 2, 1)
    """
    n = len(pairs)
    selfs = sum(s for s, _, _, _ in pairs)
    truths = sum(t for _, t, _, _ in pairs)
    agree = sum(s == t for s, t, _, _ in pairs)
    negatives = [s for s, t, _, _ in pairs if not t]
    positives = [s for s, t, _, _ in pairs if t]
    return {
        "n": n,
        "self": _rate(selfs, n),
        "truth": _rate(truths, n),
        "agreement": _rate(agree, n),
        "fpr": _rate(sum(negatives), len(negatives)),  # self says correct | truth says wrong
        "fnr": _rate(sum(not s for s in positives), len(positives)),  # self says wrong | truth says correct
        "mean_self_reward": (sum(r for _, _, r, _ in pairs) / n) if n else None,
        "unreliable": sum(u for _, _, _, u in pairs),
    }


def collapse_points(versions: list[dict[str, Any]]) -> list[int]:
    """Indices i ≥ 1 where pseudo-reward rose and held-out accuracy fell vs version i-1 (SRT's signature).

    ``versions``: per policy version (0 = base) ``{"pseudo": float | None, "heldout": float | None}``.

    >>> collapse_points([{"pseudo": .4, "heldout": .5}, {"pseudo": .6, "heldout": .3}, {"pseudo": .5, "heldout": .2}])
    [1]
    """
    out = []
    for i in range(1, len(versions)):
        a, b = versions[i - 1], versions[i]
        if None in (a.get("pseudo"), b.get("pseudo"), a.get("heldout"), b.get("heldout")):
            continue
        if b["pseudo"] > a["pseudo"] and b["heldout"] < a["heldout"]:
            out.append(i)
    return out


def version_series(results: dict[str, Any], source: str) -> list[dict[str, Any]]:
    """Per policy version of one training source: pseudo-reward and true accuracy of the episodes it
    collected (None for the last version, which collected nothing) and its held-out accuracy."""
    rounds = sorted(results.get("train", {}).get(source, {}).get("rounds", []), key=lambda r: r["round"])
    base = results.get("base_eval")
    out = [{"version": "base", "pseudo": None, "collect_truth": None,
            "heldout": base["acc"] if base else None, "heldout_lo": base["lo"] if base else None,
            "heldout_hi": base["hi"] if base else None, "outcomes": base.get("outcomes") if base else None}]
    for r in rounds:
        # round r collected with version r-1, then trained version r
        out[-1]["pseudo"] = r["collect"]["mean_self_reward"]
        out[-1]["collect_truth"] = r["collect"]["true_success"]
        ev = r.get("eval")
        out.append({"version": r["version"], "pseudo": None, "collect_truth": None,
                    "heldout": ev["acc"] if ev else None, "heldout_lo": ev["lo"] if ev else None,
                    "heldout_hi": ev["hi"] if ev else None, "outcomes": ev.get("outcomes") if ev else None})
    return out
