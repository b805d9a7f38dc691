"""B-STaR's exploration/exploitation monitors (arXiv 2412.17256), as pure functions over samples.

- Exploration: pass@k (a task has at least one correct answer among k samples) and the number of
  *distinct* correct answers (a collapsing model keeps repeating one).
- Exploitation: how often the model's self-critique agrees with the verifier (its ability to pick its
  good answers).
- Balance score per task: ``min(n'/n*, 1) · n'/n`` with n' distinct correct among n samples and n* the
  target count; its mean is the number B-STaR maximises.

    >>> balance_score(2, 4, 2)
    0.5
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memory.records import Episode


def _norm(text: str | None) -> str:
    return " ".join((text or "").split()).lower()


def distinct_correct(answers: Sequence[str | None], correct: Sequence[bool]) -> int:
    """Distinct (whitespace/case-normalised) texts among the correct samples.

    >>> distinct_correct(["a", "A ", "b", "c"], [True, True, True, False])
    2
    """
    return len({_norm(a) for a, ok in zip(answers, correct, strict=True) if ok})


def balance_score(n_distinct_correct: int, n: int, target: int) -> float:
    """``min(n'/n*, 1) · n'/n``; 0 when nothing was sampled.

    >>> balance_score(0, 4, 2), balance_score(4, 4, 2)
    (0.0, 1.0)
    """
    if n <= 0 or target <= 0:
        return 0.0
    return min(n_distinct_correct / target, 1.0) * (n_distinct_correct / n)


def pass_at_k(correct_per_task: Sequence[Sequence[bool]]) -> float:
    """Share of tasks with at least one correct sample.

    >>> pass_at_k([[False, True], [False, False]])
    0.5
    """
    if not correct_per_task:
        return 0.0
    return sum(any(c) for c in correct_per_task) / len(correct_per_task)


def critique_agreement(episodes: Iterable[Episode]) -> float | None:
    """Share of attempts whose self-critique verdict equals the verifier's (None if no critiques).

    Uses the hidden ground truth when the reward came from a self-reward source.
    """
    pairs = []
    for ep in episodes:
        for a in ep.attempts:
            if a.critique_verdict is None:
                continue
            truth = a.ground_truth.success if a.ground_truth is not None else a.feedback.success
            pairs.append(a.critique_verdict == truth)
    return sum(pairs) / len(pairs) if pairs else None


def summarize_probe(samples: Sequence[tuple[Sequence[str | None], Sequence[bool]]], target: int) -> dict[str, Any]:
    """Monitors from ``[(answers, correct) per probed task]``."""
    if not samples:
        return {"probe_tasks": 0}
    k = len(samples[0][0])
    distinct = [distinct_correct(a, c) for a, c in samples]
    return {
        "probe_tasks": len(samples),
        "k": k,
        f"pass@{k}": pass_at_k([c for _, c in samples]),
        "mean_correct": sum(sum(c) for _, c in samples) / (len(samples) * k) if k else 0.0,
        "distinct_correct": sum(distinct) / len(distinct),
        "balance_score": sum(balance_score(d, len(a), target) for d, (a, _) in zip(distinct, samples, strict=True))
        / len(samples),
    }
