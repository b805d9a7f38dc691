"""``reasoning_gym:<task>``: any of reasoning-gym's ~100 procedural datasets, scored by its own scorer.

    selfevolve envs sample reasoning_gym:leg_counting -n 2
    selfevolve envs list --all     # shows the reasoning-gym task names

Item ``i`` is reasoning-gym's own item ``index`` of one dataset built with ``dataset_seed``; the task
keeps only that index and the reference answer, and re-creates the entry to score, so tasks stay
JSON-serialisable whatever a dataset puts in its metadata.
"""

from __future__ import annotations

import random
from functools import cached_property
from typing import Any, ClassVar

from pydantic import Field, field_validator

from .base import EnvConfig, Environment, Feedback, Task
from .registry import register_environment

DATASET_SIZE = 100_000


def reasoning_gym_tasks() -> list[str]:
    import reasoning_gym.factory

    return sorted(reasoning_gym.factory.DATASETS)


class ReasoningGymConfig(EnvConfig):
    task: str = Field(description="A reasoning-gym dataset name, e.g. leg_counting.")
    dataset_seed: int = Field(default=42, description="Seed of the underlying reasoning-gym dataset.")
    options: dict[str, Any] = Field(default_factory=dict, description="Extra keyword options for the dataset.")

    @field_validator("task")
    @classmethod
    def _known(cls, v: str) -> str:
        names = reasoning_gym_tasks()
        if v not in names:
            close = [n for n in names if v.split("_")[0] in n][:8]
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
        extra = "".join(f",{k}={v}" for k, v in sorted(rest.items()))
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
        difficulty = entry.get("metadata", {}).get("difficulty", {})
        level = float(sum(v for v in difficulty.values() if isinstance(v, int | float))) if isinstance(difficulty, dict) else 0.0
        return entry["question"], {"index": index, "answer": str(entry["answer"])}, level

    def check(self, task: Task, answer: str) -> Feedback:
        entry = self.dataset[task.reference["index"]]
        score = float(self.dataset.score_answer(answer, entry))
        if score >= 1.0:
            return Feedback.correct(answer)
        return Feedback.failure(
            f"The answer {answer!r} is not correct (score {score:.2f}).", answer=answer, reward=max(0.0, min(score, 1.0))
        )
