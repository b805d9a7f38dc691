"""Plain GRPO on first attempts with the environment's reward: the baseline R3 is compared against.

    selfevolve train --method grpo --env arithmetic --steps 20

The prompt is the recorded first-attempt prompt, the completion is the answer, the reward is the
task verifier's ``Feedback.reward`` (:class:`trainer.rewards.EnvironmentReward`). Stock TRL
GRPOTrainer; only the sampling moves to the vLLM engine when asked (:mod:`trainer.engine_sampling`).
"""

from __future__ import annotations

from typing import Any

from datasets import Dataset
from trl import GRPOTrainer

from .config import ReflectionGRPOConfig, lora_config
from .engine_sampling import EngineSamplingMixin, attach_if_wanted
from .rewards import EnvironmentReward


class EngineGRPOTrainer(EngineSamplingMixin, GRPOTrainer):
    """Stock GRPOTrainer; completions sampled on the vLLM engine when the config asks for it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        attach_if_wanted(self, self.args)


def build_trainer(model: Any, tokenizer: Any, dataset: Dataset, config: ReflectionGRPOConfig,
                  callbacks: list | None = None, reward_funcs: list | None = None) -> GRPOTrainer:
    """Stock GRPOTrainer (sampling on the engine if asked); ``reward_funcs`` defaults to ``[EnvironmentReward()]``."""
    missing = [c for c in ("prompt", "task", "env") if c not in dataset.column_names]
    if missing:
        raise ValueError(f"dataset lacks columns {missing}: build it with trainer.datasets.first_attempt_dataset")
    return EngineGRPOTrainer(model=model, reward_funcs=reward_funcs or [EnvironmentReward()], args=config, train_dataset=dataset,
                       processing_class=tokenizer, peft_config=lora_config(config, model), callbacks=callbacks)
