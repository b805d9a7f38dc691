"""``reasoning_gym:<task>``: any of reasoning-gym's ~100 procedural datasets, scored by its own scorer.

    selfevolve envs sample reasoning_gym:leg_counting -n 2
    selfevolve envs list --all     # shows the reasoning-gym task names

Item ``i`` is reasoning-gym's own item ``index`` of one dataset built with ``dataset_seed``; the task
keeps that index, the reference answer and, where the sandbox codec can carry it (all but
knights_knaves), the entry's answer and metadata as typed JSON, so tasks stay JSON-serialisable and a
task is scored against what it recorded, even in another process (five datasets generate differently
under another ``PYTHONHASHSEED``).

Scoring never runs here: several of reasoning-gym's scorers ``eval`` the answer (spiral_matrix,
string_insertion, binary_matrix, n_queens) or parse it with sympy, which evaluates it (polynomial
multiplication, integration, puzzle24, countdown). Every answer is scored by the dataset's own
``score_answer`` in a sandboxed worker process (:mod:`environments._reasoning_gym_scorer`, one fork per
answer) under ``check_timeout_s``; an answer that hangs, crashes or exhausts memory scores 0.
"""

from __future__ import annotations

import difflib
import json
import math
import random
import threading
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from .base import EnvConfig, Environment, Feedback, Task
from .registry import register_environment
from .sandbox import SandboxLimits, Worker
from .sandbox._codec import encode

DATASET_SIZE = 100_000
SCORER = str(Path(__file__).with_name("_reasoning_gym_scorer.py"))
# Scorers build sympy expressions and datasets: more memory than a function check, same other limits.
WORKER_LIMITS = SandboxLimits(memory_mb=2048, processes=16, wall_s=600, cpu_s=600, result_bytes=1 << 16)
_worker: Worker | None = None
_worker_lock = threading.Lock()


def scoring_worker() -> Worker:
    """The process-wide sandboxed scorer (started on first use, restarted if it dies)."""
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = Worker(SCORER, WORKER_LIMITS, name="reasoning-gym")
        return _worker


def reasoning_gym_tasks() -> list[str]:
    import reasoning_gym.factory

    return sorted(reasoning_gym.factory.DATASETS)


def difficulty_level(difficulty: Any) -> float:
    """One number for a reasoning-gym entry's ``metadata["difficulty"]``: the sum of its settings, a range-valued
    setting (``num_terms: (2, 4)``, how most datasets state it) counting as its midpoint. Counting only plain
    numbers made the level 0 for nearly every dataset, so the curriculum saw one level."""
    if not isinstance(difficulty, dict):
        return 0.0
    level = 0.0
    for v in difficulty.values():
        if isinstance(v, bool):
            continue
        if isinstance(v, int | float):
            level += v
        elif isinstance(v, list | tuple) and v and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v):
            level += sum(v) / len(v)
    return float(level)


class ReasoningGymConfig(EnvConfig):
    task: str = Field(description="A reasoning-gym dataset name, e.g. leg_counting.")
    dataset_seed: int = Field(default=42, description="Seed of the underlying reasoning-gym dataset.")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword options of the dataset's config; in a spec, write them as plain keys "
        "(reasoning_gym:basic_arithmetic,min_terms=2).",
    )

    @model_validator(mode="before")
    @classmethod
    def _gather_options(cls, data: Any) -> Any:
        """Keys that are not ours are the dataset's options, so a spec can say ``min_terms=2``."""
        if isinstance(data, dict):
            extra = {k: v for k, v in data.items() if k not in cls.model_fields}
            if extra:
                data = {k: v for k, v in data.items() if k in cls.model_fields}
                data["options"] = {**data.get("options", {}), **extra}
        return data

    @model_validator(mode="after")
    def _options_fit(self) -> ReasoningGymConfig:
        """Check the dataset options now, not at the first sample (reasoning-gym raises TypeError)."""
        import reasoning_gym.factory

        config_cls = reasoning_gym.factory.DATASETS[self.task][1]
        try:
            config = config_cls(**self.options)
            if hasattr(config, "validate"):
                config.validate()
        except (TypeError, ValueError, AssertionError) as e:
            raise ValueError(f"bad options for reasoning-gym task {self.task!r}: {e}") from e
        return self

    @field_validator("task")
    @classmethod
    def _known(cls, v: str) -> str:
        names = reasoning_gym_tasks()
        if v not in names:
            close = difflib.get_close_matches(v, names, n=5, cutoff=0.6)
            close += [n for n in names if v.split("_")[0] in n and n not in close]
            close = close[:8]
            hint = f" Did you mean one of {close}?" if close else " See `selfevolve envs list --all`."
            raise ValueError(f"unknown reasoning-gym task {v!r}.{hint}")
        return v


@register_environment("reasoning_gym")
class ReasoningGym(Environment):
    """Adapter to any reasoning-gym task: reasoning_gym:<task>."""

    config_class = ReasoningGymConfig
    positional_option: ClassVar[str] = "task"
    system_prompt = "You are a careful assistant. Think step by step briefly, then answer."

    @property
    def spec(self) -> str:
        rest = self.config.model_dump(exclude_defaults=True)
        rest.pop("task", None)
        rest.update(rest.pop("options", {}))  # dataset options are written as plain keys
        extra = "".join(f",{k}={_spec_value(v)}" for k, v in sorted(rest.items()))
        return f"{self.name}:{self.config.task}{extra}"

    @cached_property
    def dataset(self) -> Any:
        import reasoning_gym

        return reasoning_gym.create_dataset(
            self.config.task, seed=self.config.dataset_seed, size=DATASET_SIZE, **self.config.options
        )

    def generate(self, rng: random.Random) -> tuple[str, dict[str, Any], float]:
        index = rng.randrange(DATASET_SIZE)
        entry = self.dataset[index]
        level = difficulty_level(entry.get("metadata", {}).get("difficulty", {}))
        reference: dict[str, Any] = {"index": index, "answer": str(entry["answer"])}
        try:  # what the scorer needs, recorded: five datasets regenerate differently in another process
            reference["entry"] = encode({"answer": entry["answer"], "metadata": entry.get("metadata", {})})
        except (TypeError, RecursionError):
            pass  # metadata the codec cannot carry (numpy strings): the scorer regenerates the entry
        return entry["question"], reference, level

    checks_out_of_process = True

    def check(self, task: Task, answer: str) -> Feedback:
        cfg = self.config
        payload = {"task": cfg.task, "seed": cfg.dataset_seed, "options": cfg.options,
                   "index": task.reference["index"], "question": task.question, "answer": answer}
        if "entry" in task.reference:
            payload["entry"] = task.reference["entry"]
        reply = scoring_worker().call(payload, timeout_s=cfg.check_timeout_s)
        if reply.get("timeout"):
            return Feedback.failure(
                f"Checking the answer took longer than {cfg.check_timeout_s:g} s, so it scored 0.", answer=answer
            )
        if str(reply.get("error", "")).startswith("prepare failed"):  # our bug (the spec was validated here)
            raise RuntimeError(f"{self.spec}: the sandboxed scorer could not build the dataset: {reply['error']}")
        score = reply.get("ok")
        if "error" in reply or not isinstance(score, int | float) or not math.isfinite(score):
            why = str(reply.get("error", "no score"))[:200]
            return Feedback.failure(f"The answer could not be scored ({why}), so it scored 0.", answer=answer)
        if score >= 1.0:
            return Feedback.correct(answer)
        return Feedback.failure(
            f"The answer {answer!r} is not correct (score {score:.2f}).", answer=answer, reward=max(0.0, min(score, 1.0))
        )


def _spec_value(value: Any) -> str:
    """How ``parse_spec`` will read ``value`` back: JSON, except strings that do not look like JSON."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except json.JSONDecodeError:
            return value
    return json.dumps(value, separators=(",", ":"))
