"""Where to spend episodes: HS-STaR's boundary band (arXiv 2505.19866), as pure functions.

A *level* is (environment spec, task difficulty). From recent episodes each level gets a success rate
p; a level the model always or never solves teaches nothing, so its weight is ``p(1-p)`` (the variance
of the reward, maximal at p = 1/2), never below ``floor``; a level with fewer than ``min_samples``
episodes is unexplored and gets ``explore_weight``. Collection then draws candidate tasks from each
environment and keeps them in proportion to their level's weight.

    >>> round(level_weight(3, 4, min_samples=4, explore_weight=0.25, floor=0.02), 4)
    0.1875
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from environments import Task
    from memory.records import Episode

Level = tuple[str, float]


@dataclass(frozen=True)
class LevelStats:
    successes: int
    n: int

    @property
    def rate(self) -> float:
        return self.successes / self.n if self.n else 0.0


def level_stats(episodes: Iterable[Episode]) -> dict[Level, LevelStats]:
    """First-try successes and counts per (env, difficulty) of train-split episodes."""
    counts: dict[Level, list[int]] = {}
    for ep in episodes:
        if ep.task.split != "train":
            continue
        c = counts.setdefault((ep.env, float(ep.task.difficulty)), [0, 0])
        c[0] += int(ep.first_success)
        c[1] += 1
    return {k: LevelStats(s, n) for k, (s, n) in counts.items()}


def level_weight(successes: int, n: int, *, min_samples: int, explore_weight: float, floor: float) -> float:
    """``p(1-p)`` floored, or ``explore_weight`` for an unexplored level.

    >>> level_weight(0, 0, min_samples=4, explore_weight=0.25, floor=0.02)
    0.25
    >>> level_weight(10, 10, min_samples=4, explore_weight=0.25, floor=0.02)
    0.02
    """
    if n < min_samples:
        return explore_weight
    p = successes / n
    return max(p * (1 - p), floor)


def env_weights(
    specs: Sequence[str], base_weights: Sequence[float], stats: dict[Level, LevelStats], *,
    min_samples: int, explore_weight: float, floor: float,
) -> dict[str, float]:
    """Each env's share: its configured weight x the mean weight of its seen levels (explore if none)."""
    out = {}
    for spec, base in zip(specs, base_weights, strict=True):
        ws = [level_weight(s.successes, s.n, min_samples=min_samples, explore_weight=explore_weight, floor=floor)
              for (env, _), s in stats.items() if env == spec]
        out[spec] = base * (sum(ws) / len(ws) if ws else explore_weight)
    return out


def allocate(n: int, weights: dict[str, float]) -> dict[str, int]:
    """Split ``n`` slots in proportion to ``weights`` (largest remainder; deterministic).

    >>> allocate(10, {"a": 3.0, "b": 1.0})
    {'a': 8, 'b': 2}
    """
    total = sum(weights.values())
    if n <= 0 or total <= 0:
        return {k: 0 for k in weights}
    exact = {k: n * w / total for k, w in weights.items()}
    counts = {k: int(v) for k, v in exact.items()}
    rest = n - sum(counts.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - counts[k]), k))[:rest]:
        counts[k] += 1
    return counts


def pick_tasks(candidates: Sequence[Task], n: int, weight_of: dict[float, float], default: float,
               rng: random.Random) -> list[Task]:
    """Draw ``n`` distinct candidates without replacement, each with probability ∝ its level's weight.

    Efraimidis–Spirakis keys ``u ** (1 / w)``: the ``n`` largest form a weighted sample.
    """
    keyed = []
    for i, task in enumerate(candidates):
        w = max(weight_of.get(float(task.difficulty), default), 1e-9)
        keyed.append((rng.random() ** (1.0 / w), i))
    keyed.sort(reverse=True)
    return [candidates[i] for _, i in keyed[:n]]


def plan(
    specs: Sequence[str], base_weights: Sequence[float], stats: dict[Level, LevelStats], n: int, *,
    min_samples: int = 4, explore_weight: float = 0.25, floor: float = 0.02,
) -> tuple[dict[str, int], dict[str, dict[float, float]]]:
    """How many tasks per env, and the weight of each known level per env (for :func:`pick_tasks`)."""
    kw = dict(min_samples=min_samples, explore_weight=explore_weight, floor=floor)
    counts = allocate(n, env_weights(specs, base_weights, stats, **kw))
    levels: dict[str, dict[float, float]] = {spec: {} for spec in specs}
    for (env, difficulty), s in stats.items():
        if env in levels:
            levels[env][difficulty] = level_weight(s.successes, s.n, **kw)
    return counts, levels
