"""Plain GRPO on first attempts with the environment's reward: the baseline R3 is compared against.

    selfevolve train --method grpo --env arithmetic --steps 20

The prompt is the recorded first-attempt prompt, the completion is the answer, the reward is the
task verifier's ``Feedback.reward`` (:class:`trainer.rewards.EnvironmentReward`). TRL's GRPOTrainer with
DAPO dynamic sampling mixed in (:mod:`trainer.dynamic_sampling`; ``dynamic_sampling=False`` turns it off);
sampling moves to the vLLM engine when asked (:mod:`trainer.engine_sampling`);
the method's whole registration is the decorator on :func:`build_trainer`.
"""

from __future__ import annotations

from typing import Any

from datasets import Dataset
from trl import GRPOTrainer

from . import datasets as D
from .config import GPU_GRPO_OVERRIDES, ReflectionGRPOConfig, lora_config
from .dynamic_sampling import DynamicSamplingMixin
from .engine_sampling import EngineSamplingMixin, attach_if_wanted
from .methods import register_training_method
from .rewards import EnvironmentReward


class SelfEvolveGRPOTrainer(DynamicSamplingMixin, EngineSamplingMixin, GRPOTrainer):
    """TRL's GRPOTrainer; all-equal groups replaced (trainer.dynamic_sampling), sampling on the engine if asked."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        attach_if_wanted(self, self.args)


@register_training_method(
    "grpo", config_class=ReflectionGRPOConfig, dataset=lambda episodes, env, config: D.first_attempt_dataset(episodes, env),
    defaults=dict(num_generations=4, max_completion_length=64, beta=0.0), gpu_defaults=GPU_GRPO_OVERRIDES,
    needs="episode", empty_hint=D.unlabelled_hint,
)
def build_trainer(model: Any, tokenizer: Any, dataset: Dataset, config: ReflectionGRPOConfig,
                  callbacks: list | None = None, reward_funcs: list | None = None) -> GRPOTrainer:
    """GRPO on first attempts; ``reward_funcs`` defaults to ``[EnvironmentReward()]``."""
    missing = [c for c in ("prompt", "task", "env") if c not in dataset.column_names]
    if missing:
        raise ValueError(f"dataset lacks columns {missing}: build it with trainer.datasets.first_attempt_dataset")
    return SelfEvolveGRPOTrainer(model=model, reward_funcs=reward_funcs or [EnvironmentReward()], args=config, train_dataset=dataset,
                       processing_class=tokenizer, peft_config=lora_config(config, model), callbacks=callbacks)
