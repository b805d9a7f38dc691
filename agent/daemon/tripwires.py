"""Collapse tripwires (SRT, arXiv 2505.21444), as pure functions over per-training-cycle series.

SRT's self-rewarded training matches ground-truth RL for a while, then collapses: the training reward
keeps rising (or spikes) while held-out accuracy falls, and the KL to the base jumps. The daemon
checks both after every training; a trip stops training and rolls back to the last promoted version.

    >>> reward_accuracy_divergence([0.2, 0.5, 0.9], [0.4, 0.3, 0.1], window=3) is not None
    True
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def reward_accuracy_divergence(
    train_rewards: Sequence[float | None], heldout_accuracy: Sequence[float | None], *, window: int = 3,
    min_reward_rise: float = 0.05, min_accuracy_drop: float = 0.05,
) -> str | None:
    """Over the last ``window`` trainings: reward up by >= min_reward_rise AND accuracy down by >= min_accuracy_drop.

    Returns the reason, or None. Cycles lacking either number are skipped.

    >>> reward_accuracy_divergence([0.2, 0.3, 0.4], [0.4, 0.5, 0.6]) is None
    True
    """
    pairs = [(r, a) for r, a in zip(train_rewards, heldout_accuracy, strict=True) if r is not None and a is not None]
    if len(pairs) < window:
        return None
    recent = pairs[-window:]
    rise = recent[-1][0] - recent[0][0]
    drop = recent[0][1] - recent[-1][1]
    if rise >= min_reward_rise and drop >= min_accuracy_drop:
        return (
            f"training reward rose {recent[0][0]:.3f} -> {recent[-1][0]:.3f} while held-out accuracy fell "
            f"{recent[0][1]:.3f} -> {recent[-1][1]:.3f} over the last {window} trainings (SRT collapse signature)"
        )
    return None


def kl_jump(kls: Sequence[float | None], *, factor: float = 5.0, minimum: float = 0.05) -> str | None:
    """The last KL exceeds ``factor`` x the median of the earlier ones and ``minimum``.

    >>> kl_jump([0.01, 0.012, 0.011, 0.2]) is not None
    True
    >>> kl_jump([0.2]) is None
    True
    """
    values = [k for k in kls if k is not None]
    if len(values) < 2:
        return None
    last, earlier = values[-1], statistics.median(values[:-1])
    if last > minimum and last > factor * max(earlier, 1e-12):
        return f"KL to the base jumped to {last:.4f} (median of earlier trainings {earlier:.4f})"
    return None


def check(
    history: Sequence[dict], *, window: int, min_reward_rise: float, min_accuracy_drop: float, kl_factor: float,
    kl_min: float,
) -> str | None:
    """Both tripwires over training records ``{"train_reward", "self_reward", "heldout_accuracy", "kl"}`` (oldest
    first).

    The divergence is checked twice: against the trainer's reward (absent for SFT and DPO), and against
    ``self_reward``, the mean pseudo-reward of the episodes the daemon collected with a self-reward
    feedback source in that cycle (by the version serving then). The latter sees an SRT collapse whatever
    the training method: the policy learns to agree with itself, so its self-reward rises while the
    held-out accuracy of the candidates falls.

    >>> hist = [{"self_reward": r, "heldout_accuracy": a} for r, a in [(0.3, 0.5), (0.8, 0.3), (1.0, 0.1)]]
    >>> "self-reward" in check(hist, window=3, min_reward_rise=0.05, min_accuracy_drop=0.05, kl_factor=5, kl_min=0.05)
    True
    """
    accuracy = [h.get("heldout_accuracy") for h in history]
    reason = reward_accuracy_divergence(
        [h.get("train_reward") for h in history], accuracy, window=window,
        min_reward_rise=min_reward_rise, min_accuracy_drop=min_accuracy_drop,
    )
    if reason is None:
        reason = reward_accuracy_divergence(
            [h.get("self_reward") for h in history], accuracy, window=window,
            min_reward_rise=min_reward_rise, min_accuracy_drop=min_accuracy_drop,
        )
        reason = reason and f"self-reward of collected episodes: {reason}"
    return reason or kl_jump([h.get("kl") for h in history], factor=kl_factor, minimum=kl_min)
