"""What the experiments share: the atomic results-file write, the exact paired test on outcomes, and the
generation-length overrides of a training method.

Pure (no model): the experiments' report modules import this, never each other.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def save_results(path: Path, results: dict[str, Any]) -> None:
    """Write ``results`` as JSON atomically (a temp file renamed over ``path``), so a kill leaves the old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, path)


def generation_overrides(method: str, tokens: int) -> dict[str, int]:
    """``tokens`` for every generation-length field the method's config has (GRPO's completion and R3's retry)."""
    from trainer.methods import get_training_method

    fields = get_training_method(method).config_class.__dataclass_fields__
    return {k: tokens for k in ("max_completion_length", "retry_max_new_tokens") if k in fields}


def mcnemar_p(new: list[int], old: list[int]) -> tuple[int, int, float]:
    """Paired outcomes → (tasks only ``new`` solved, tasks only ``old`` solved, one-sided exact p that new > old).

    >>> mcnemar_p([1, 1, 1, 0], [0, 0, 0, 0])
    (3, 0, 0.125)
    """
    wins = sum(a and not b for a, b in zip(new, old, strict=True))
    losses = sum(b and not a for a, b in zip(new, old, strict=True))
    n = wins + losses
    p = sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n if n else 1.0
    return wins, losses, p
