"""The evaluation gate: pure statistics deciding whether a candidate model replaces the serving one.

Input: per-task outcomes of the candidate and the current version on the SAME held-out tasks (a paired
design: each task is attempted by both, so task difficulty cancels out). :mod:`agent.cycle` runs the
episodes (for ``selfevolve eval --against``, the daemon and the experiments); this module only counts.
:class:`TaskOutcome` is the one per-task outcome type from the episode to the decision.

- Accuracies (first try, and final = after reflection and retry) with 95% Wilson score intervals.
- The paired difference ``candidate - current`` on each metric with Newcombe's (1998, method 10)
  interval for paired proportions, which uses the discordant pairs and the correlation of the pairs.
- Decision: ``promote`` iff the difference on the primary metric (``final`` by default: R3 trains the
  retry) is > 0 and >= ``margin``; with ``margin=0`` that means strictly better — a tie keeps the
  current model. ``require_significant=True`` additionally asks the interval's lower bound to be > 0.

    from trainer.gate import evaluate_gate, TaskOutcome
    d = evaluate_gate({"t1": TaskOutcome(False, True)}, {"t1": TaskOutcome(False, False)})
    print(d.reason)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from memory.records import Episode

Metric = Literal["first", "final"]
Z95 = 1.959963984540054


class TaskOutcome(NamedTuple):
    """One task's result for one model version: solved on the first try, solved in the end."""

    first: bool
    final: bool


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion.

    >>> [round(x, 4) for x in wilson(8, 10)]
    [0.4902, 0.9433]
    >>> wilson(0, 0)
    (0.0, 1.0)
    >>> wilson(10, 10)[1], wilson(0, 10)[0]
    (1.0, 0.0)
    """
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # The bounds are exactly 0 at p = 0 and exactly 1 at p = 1; say so rather than trust float rounding.
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def paired_difference(cand: list[bool], curr: list[bool], z: float = Z95) -> tuple[float, float, float]:
    """``p_cand - p_curr`` and Newcombe's method-10 interval for paired binary outcomes.

    >>> d, lo, hi = paired_difference([True] * 5 + [False] * 5, [True] * 5 + [False] * 5)
    >>> (d, lo < 0 < hi)
    (0.0, True)
    """
    if len(cand) != len(curr):
        raise ValueError("paired outcomes must have the same length")
    n = len(cand)
    if n == 0:
        return 0.0, -1.0, 1.0
    a = sum(x and y for x, y in zip(cand, curr, strict=True))
    b = sum(x and not y for x, y in zip(cand, curr, strict=True))
    c = sum(y and not x for x, y in zip(cand, curr, strict=True))
    d = n - a - b - c
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson(a + b, n, z)
    l2, u2 = wilson(a + c, n, z)
    denom = math.sqrt((a + b) * (c + d) * (a + c) * (b + d))
    if denom == 0:
        phi = 0.0
    else:
        num = a * d - b * c
        phi = (max(num - n / 2, 0.0) if num > 0 else num) / denom
    diff = p1 - p2
    dl = (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2
    du = (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2
    return diff, max(-1.0, diff - math.sqrt(max(dl, 0.0))), min(1.0, diff + math.sqrt(max(du, 0.0)))


class MetricStats(BaseModel):
    model_config = ConfigDict(extra="forbid")

    candidate: float
    candidate_ci: tuple[float, float]
    current: float
    current_ci: tuple[float, float]
    diff: float
    diff_ci: tuple[float, float]
    candidate_only: int  # tasks only the candidate solved (discordant pairs)
    current_only: int


class GateDecision(BaseModel):
    """Every number behind the decision plus a one-line human-readable reason."""

    model_config = ConfigDict(extra="forbid")

    candidate: str
    current: str
    n_tasks: int
    primary: Metric
    margin: float
    require_significant: bool
    first: MetricStats
    final: MetricStats
    promote: bool
    reason: str

    def summary(self) -> str:
        return f"{'promote' if self.promote else 'keep current'}: {self.reason}"


def _stats(cand: list[bool], curr: list[bool]) -> MetricStats:
    n = len(cand)
    diff, lo, hi = paired_difference(cand, curr)
    return MetricStats(
        candidate=sum(cand) / n, candidate_ci=wilson(sum(cand), n), current=sum(curr) / n, current_ci=wilson(sum(curr), n),
        diff=diff, diff_ci=(lo, hi),
        candidate_only=sum(x and not y for x, y in zip(cand, curr, strict=True)),
        current_only=sum(y and not x for x, y in zip(cand, curr, strict=True)),
    )


def evaluate_gate(
    candidate: Mapping[str, TaskOutcome],
    current: Mapping[str, TaskOutcome],
    candidate_id: str = "candidate",
    current_id: str = "current",
    primary: Metric = "final",
    margin: float = 0.0,
    require_significant: bool = False,
    drop_unpaired: bool = False,
) -> GateDecision:
    """Compare two versions on the same tasks (keys are task ids) and decide whether to promote.

    Tasks present for only one version raise, unless ``drop_unpaired`` (then they are left out and the
    reason says how many).
    """
    if primary not in ("first", "final"):
        raise ValueError(f"primary must be 'first' or 'final', not {primary!r}")
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"margin must be in [0, 1) (an accuracy difference), got {margin}")
    missing_c, missing_k = sorted(set(current) - set(candidate)), sorted(set(candidate) - set(current))
    dropped = len(missing_c) + len(missing_k)
    if drop_unpaired:
        common = set(candidate) & set(current)
        candidate = {t: v for t, v in candidate.items() if t in common}
        current = {t: v for t, v in current.items() if t in common}
    elif missing_c or missing_k:
        raise ValueError(
            f"the gate needs paired outcomes on the same tasks: {len(missing_c)} task(s) lack a candidate result "
            f"(e.g. {missing_c[:3]}), {len(missing_k)} lack a current result (e.g. {missing_k[:3]}); evaluate "
            "both versions on the same held-out task list"
        )
    if not candidate:
        raise ValueError("no held-out tasks to compare on: evaluate both versions on the eval split first")
    ids = sorted(candidate)
    first = _stats([bool(candidate[t].first) for t in ids], [bool(current[t].first) for t in ids])
    final = _stats([bool(candidate[t].final) for t in ids], [bool(current[t].final) for t in ids])
    s = first if primary == "first" else final
    better = s.diff > 0 and s.diff >= margin - 1e-12
    significant = s.diff_ci[0] > 0
    promote = better and (significant or not require_significant)
    pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    detail = (
        f"{primary} accuracy {pct(s.candidate)} vs {pct(s.current)} on {len(ids)} paired tasks "
        f"(diff {100 * s.diff:+.1f} pts, 95% CI [{100 * s.diff_ci[0]:+.1f}, {100 * s.diff_ci[1]:+.1f}])"
    )
    if promote:
        reason = f"{candidate_id} beats {current_id}: {detail}"
    elif not better:
        need = f"by >= {100 * margin:.1f} pts" if margin > 0 else "strictly"
        reason = f"{candidate_id} does not beat {current_id} {need}: {detail}"
    else:
        reason = f"{candidate_id} is better but not significantly (CI includes 0): {detail}"
    if drop_unpaired and dropped:
        reason += f"; {dropped} unpaired task(s) left out"
    return GateDecision(candidate=candidate_id, current=current_id, n_tasks=len(ids), primary=primary, margin=margin,
                        require_significant=require_significant, first=first, final=final, promote=promote,
                        reason=reason)


def outcomes_from_episodes(episodes: Iterable[Episode]) -> dict[str, TaskOutcome]:
    """Per-task outcomes from evaluation episodes (``Episode.first_success`` / ``.success``).

    One episode per task is expected; if a task repeats, the first episode counts (eval runs should
    attempt each held-out task once per version).
    """
    out: dict[str, TaskOutcome] = {}
    for ep in episodes:
        if ep.error is not None:
            continue  # our bug, not the model's: excluded from both accuracy and pairing
        out.setdefault(ep.task.id, TaskOutcome(ep.first_success, ep.success))
    return out
