"""DAPO-style dynamic sampling for TRL's GRPOTrainer: a group whose rewards are all equal is dropped and
replaced by other prompts of the dataset, so every group that enters the loss has a gradient.

Why: at 135M most R3 groups are all-fail (or, on easy tasks, all-success); their GRPO advantage is exactly
0, yet TRL keeps them in the batch, where they dilute the token-normalised loss and cost the full
reflection + retry generation for nothing (docs/reflection.md measures the share per env).

How (:class:`DynamicSamplingMixin`, mixed into our GRPO trainers): after TRL generates and scores a
generation batch, groups with zero advantage everywhere are removed; up to ``dynamic_max_rounds`` times,
as many fresh prompts as were removed are drawn from the training set (not yet used this step), each
repeated ``num_generations`` times like TRL's sampler does, generated and scored with TRL's own code, and
their varying groups are kept. The kept groups are re-padded into one batch (prompts on the left,
completions on the right) and ``num_items_in_batch`` is recomputed. If no group varies after the last
round, the batch is trained with its advantages all zero (no gradient: no all-equal group ever moves
the weights) and ``dynamic/empty_steps`` counts it. A short batch (some varying groups found, fewer
than asked) trains on the groups it has.

Logged per step: ``dynamic/zero_variance_share`` (share of the FIRST draw's groups whose rewards were all
equal: what plain GRPO would have trained on), ``dynamic/resampled_groups``, ``dynamic/kept_groups``,
``dynamic/empty_steps``, and ``dynamic/reward_mean`` (mean reward of the first draw). Needs one process
and ``steps_per_generation == 1`` (checked in the configs).
"""

from __future__ import annotations

import random
from typing import Any

import torch

_LEFT_PADDED = ("prompt_ids", "prompt_mask")
_SCALARS = ("num_items_in_batch",)


def varying_groups(advantages: torch.Tensor, group: int) -> list[int]:
    """Indices of the groups (``group`` consecutive rows each) whose advantages are not all zero.

    >>> varying_groups(torch.tensor([0.0, 0.0, 0.5, -0.5]), 2)
    [1]
    """
    per = advantages.view(-1, group).abs().sum(dim=1)
    return [i for i, v in enumerate(per.tolist()) if v > 0]


def _pad(t: torch.Tensor, width: int, left: bool, value: float) -> torch.Tensor:
    extra = width - t.shape[1]
    if extra <= 0:
        return t
    fill = torch.full((t.shape[0], extra, *t.shape[2:]), value, dtype=t.dtype, device=t.device)
    return torch.cat([fill, t] if left else [t, fill], dim=1)


def merge_groups(parts: list[tuple[dict[str, Any], list[int]]], group: int, pad_id: int) -> dict[str, Any]:
    """One batch of the chosen groups of several TRL generation outputs, re-padded to common widths."""
    keys = [k for k, v in parts[0][0].items() if isinstance(v, torch.Tensor) and k not in _SCALARS and v.ndim > 0]
    merged: dict[str, Any] = {}
    for key in keys:
        pieces = []
        for out, groups in parts:
            rows = [r for g in groups for r in range(g * group, (g + 1) * group)]
            if rows:
                pieces.append(out[key][rows])
        if pieces[0].ndim >= 2:
            width = max(p.shape[1] for p in pieces)
            value = pad_id if key.endswith("_ids") else (1 if key == "tool_mask" else 0)
            pieces = [_pad(p, width, key in _LEFT_PADDED, value) for p in pieces]
        merged[key] = torch.cat(pieces, dim=0)
    for key, value in parts[0][0].items():  # non-tensor entries (e.g. counts) come from the first output
        if key not in merged and key not in _SCALARS:
            merged[key] = value
    loss_mask = merged["completion_mask"] * merged["tool_mask"] if "tool_mask" in merged else merged["completion_mask"]
    merged["num_items_in_batch"] = loss_mask.sum()
    return merged


class DynamicSamplingMixin:
    """Mix in before ``GRPOTrainer``: replaces zero-variance groups (see the module docstring)."""

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        out = super()._generate_and_score_completions(inputs)  # type: ignore[misc]
        if not (self.model.training and getattr(self.args, "dynamic_sampling", False)):  # type: ignore[attr-defined]
            return out
        return self._dynamic_batch(inputs, out)

    def _dynamic_batch(self, inputs: list[dict[str, Any]], out: dict[str, Any]) -> dict[str, Any]:
        g = self.num_generations  # type: ignore[attr-defined]
        wanted = len(inputs) // g
        keep = varying_groups(out["advantages"], g)
        metrics = self._metrics["train"]  # type: ignore[attr-defined]
        metrics["dynamic/zero_variance_share"].append(1 - len(keep) / wanted)
        metrics["dynamic/reward_mean"].append(float(metrics["reward"][-1]) if metrics.get("reward") else 0.0)
        parts = [(out, keep)]
        used = {x.get("episode_id") for x in inputs}
        rng = getattr(self, "_dynamic_rng", None) or random.Random(self.args.seed)  # type: ignore[attr-defined]
        self._dynamic_rng = rng
        resampled = 0
        for _ in range(self.args.dynamic_max_rounds):  # type: ignore[attr-defined]
            missing = wanted - sum(len(k) for _, k in parts)
            fresh = self._fresh_rows(missing, used, rng)
            if missing <= 0 or not fresh:
                break
            resampled += len(fresh)
            more = super()._generate_and_score_completions([row for row in fresh for _ in range(g)])  # type: ignore[misc]
            parts.append((more, varying_groups(more["advantages"], g)[:missing]))
        kept = sum(len(k) for _, k in parts)
        metrics["dynamic/resampled_groups"].append(resampled)
        metrics["dynamic/kept_groups"].append(kept)
        metrics["dynamic/empty_steps"].append(int(kept == 0))
        if kept == 0:
            return out  # every advantage is 0: the step cannot move the weights
        pad_id = self.processing_class.pad_token_id  # type: ignore[attr-defined]
        return merge_groups([p for p in parts if p[1]], g, pad_id)

    def _fresh_rows(self, n: int, used: set[Any], rng: random.Random) -> list[dict[str, Any]]:
        """``n`` training rows not used this step (by ``episode_id``), drawn at random."""
        data = self.train_dataset  # type: ignore[attr-defined]
        candidates = [i for i in range(len(data)) if data[i].get("episode_id") not in used]
        rng.shuffle(candidates)
        rows = [data[i] for i in candidates[:max(n, 0)]]
        used.update(r.get("episode_id") for r in rows)
        return rows
