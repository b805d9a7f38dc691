"""Statistics over failures × samples, clustered by failure (the k samples of one failure are not independent).

>>> m = successes_matrix([(0, 0, True), (0, 1, False), (1, 0, False), (1, 1, False)], n=2, k=2)
>>> m.tolist(), round(recovery(m), 2), variance_share(m), any_share(m)
([[1, 0], [0, 0]], 0.25, 0.5, 0.5)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

B = 4000  # bootstrap resamples
PERMUTATIONS = 20000


def successes_matrix(samples: Iterable[tuple[int, int, bool]], n: int, k: int) -> np.ndarray:
    """(failure, sample) → 0/1, shape (n, k). Raises if a cell is missing (a study that did not finish)."""
    m = np.full((n, k), -1, dtype=int)
    for i, j, ok in samples:
        if i < n and j < k:
            m[i, j] = int(ok)
    if (m < 0).any():
        missing = int((m < 0).sum())
        raise ValueError(f"{missing} of {n * k} samples are missing: finish the run (`run --out ...` resumes)")
    return m


def recovery(m: np.ndarray) -> float:
    return float(m.mean()) if m.size else 0.0


def any_share(m: np.ndarray) -> float:
    """Share of failures recovered by at least one of the k samples."""
    return float((m.sum(axis=1) > 0).mean()) if m.size else 0.0


def variance_share(m: np.ndarray) -> float:
    """Share of failures whose k rewards are not all equal: the R3 groups that would have a gradient."""
    s = m.sum(axis=1)
    return float(((s > 0) & (s < m.shape[1])).mean()) if m.size else 0.0


def bootstrap_ci(per_failure: np.ndarray, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of the mean of ``per_failure`` values, resampling failures.

    >>> bootstrap_ci(np.zeros(10))
    (0.0, 0.0)
    """
    if per_failure.size == 0:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, per_failure.size, size=(B, per_failure.size))
    means = per_failure[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def permutation_p(diff: np.ndarray, seed: int = 0) -> float:
    """Two-sided sign-flip permutation p-value for mean(diff) = 0 (paired, no distribution assumed).

    >>> permutation_p(np.zeros(8))
    1.0
    """
    diff = diff[diff != 0]
    if diff.size == 0:
        return 1.0
    rng = np.random.default_rng(seed)
    observed = abs(diff.mean())
    signs = rng.choice([-1.0, 1.0], size=(PERMUTATIONS, diff.size))
    null = np.abs((signs * diff).mean(axis=1))
    return float((1 + (null >= observed - 1e-12).sum()) / (PERMUTATIONS + 1))


@dataclass
class ArmStats:
    arm: str
    failures: int
    samples: int
    recovery: float
    ci: tuple[float, float]
    any_of_k: float
    varying_groups: float

    @classmethod
    def of(cls, arm: str, m: np.ndarray) -> ArmStats:
        return cls(arm, m.shape[0], int(m.size), recovery(m), bootstrap_ci(m.mean(axis=1)), any_share(m),
                   variance_share(m))


@dataclass
class Paired:
    x: str
    y: str
    diff: float  # mean per-failure recovery of x minus y
    ci: tuple[float, float]
    p: float

    @classmethod
    def of(cls, x: str, mx: np.ndarray, y: str, my: np.ndarray) -> Paired:
        d = mx.mean(axis=1) - my.mean(axis=1)
        return cls(x, y, float(d.mean()), bootstrap_ci(d), permutation_p(d))
