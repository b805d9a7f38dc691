"""R3 ("Reflect, Retry, Reward", arXiv 2505.24726) on TRL's GRPOTrainer: learn to write reflections
that make the retry succeed.

    selfevolve train --method grpo-reflection --env arithmetic --steps 20

Design decisions
- The dataset prompt is the recorded reflect input (task, failed attempt, feedback, "reflect"), so the
  GRPO *completion is the reflection*: only reflection tokens are sampled by the trainer and only they
  get gradient — no loss masking, no fork of TRL. The first answer is context; the retry answer is
  generated inside the reward and never enters the loss (learn to reflect, not to memorise answers).
- The reward (:class:`trainer.rewards.RetryReward`) builds the retry prompt per the invariant of
  :mod:`memory.records`, generates the retry with the CURRENT policy (the LoRA weights being trained,
  in eval mode under inference_mode), verifies it and returns 1/0. The only hook here binds the reward
  to the live model after TRL has wrapped it with PEFT.
- Zero-variance groups (all G retries succeed or all fail) get advantage exactly 0 and so no policy
  gradient. TRL would keep them in the batch (diluting the token-normalised "dapo" loss); with
  ``dynamic_sampling`` (the default) they are dropped and replaced by other failures, DAPO-style
  (:mod:`trainer.dynamic_sampling`), and ``dynamic/zero_variance_share`` logs the share per step.
- ``retry_success_rate`` (the share of retries that succeeded) is logged each step next to ``reward``.
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
from .rewards import RetryReward


class ReflectionGRPOTrainer(DynamicSamplingMixin, EngineSamplingMixin, GRPOTrainer):
    """GRPOTrainer whose reward generates the retry with the policy being trained.

    With ``generation_engine`` = vllm (or ``$SELFEVOLVE_ENGINE=vllm``) the reflections and the retries are
    sampled on the vLLM engine, the live weights synced once per step (:mod:`trainer.engine_sampling`).
    """

    def __init__(self, *args: Any, retry_reward: RetryReward, **kwargs: Any) -> None:
        if "reward_funcs" in kwargs:
            raise TypeError("ReflectionGRPOTrainer sets reward_funcs itself: pass retry_reward= instead")
        super().__init__(*args, reward_funcs=[retry_reward], **kwargs)
        sync = attach_if_wanted(self, self.args)
        retry_reward.bind(self.accelerator.unwrap_model(self.model), self.processing_class, engine_sync=sync)
        self.retry_reward = retry_reward


REQUIRED_COLUMNS = ("prompt", "task", "env", "retry_template", "retry_slot")


@register_training_method(
    "grpo-reflection", config_class=ReflectionGRPOConfig,
    dataset=lambda episodes, env, config: D.reflection_dataset(episodes, env),
    defaults=dict(num_generations=4, max_completion_length=64, beta=0.0), gpu_defaults=GPU_GRPO_OVERRIDES,
    needs="episode with a failed first attempt, a reflection and a retry", empty_hint=D.unlabelled_hint,
)
def build_trainer(model: Any, tokenizer: Any, dataset: Dataset, config: ReflectionGRPOConfig,
                  callbacks: list | None = None, retry_reward: RetryReward | None = None) -> ReflectionGRPOTrainer:
    """The R3 trainer; ``retry_reward`` defaults to a RetryReward configured from ``config``."""
    missing = [c for c in REQUIRED_COLUMNS if c not in dataset.column_names]
    if missing:
        raise ValueError(f"reflection dataset lacks columns {missing}: build it with trainer.datasets.reflection_dataset")
    reward = retry_reward or RetryReward(format_weight=config.retry_format_weight, max_new_tokens=config.retry_max_new_tokens,
                         batch_size=config.retry_batch_size)
    return ReflectionGRPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                                 peft_config=lora_config(config, model), callbacks=callbacks, retry_reward=reward)
