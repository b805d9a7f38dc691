"""SFT on successful trajectories (STaR / rejection-sampling fine-tuning) with TRL's SFTTrainer.

    selfevolve train --method sft --env arithmetic --steps 20

Rows are conversational prompt/completion pairs from :func:`trainer.datasets.sft_dataset` (optionally
plus :func:`trainer.datasets.rationalize`); the loss is on the completion only
(``completion_only_loss=True``). STaR fine-tunes from the base model each iteration: ``train`` starts
from the serving version's *base* weights with a fresh adapter, not from the previous adapter.
"""

from __future__ import annotations

from typing import Any

from datasets import Dataset
from trl import SFTTrainer

from . import datasets as D
from .config import SelfEvolveSFTConfig, lora_config
from .methods import register_training_method


def _rows(episodes, env: str | None, config: SelfEvolveSFTConfig | None) -> Dataset:
    return D.sft_dataset(episodes, env, reformat=bool(getattr(config, "reformat_answers", False)))


def _needs(config: SelfEvolveSFTConfig | None) -> str:
    reformat = bool(getattr(config, "reformat_answers", False))
    return "successful episode" + (" (nor a first attempt its env could reformat into one)" if reformat else "")


# LoRA SFT needs a larger step than GRPO: on 15 reformatted arithmetic rows, 16 steps at 1e-4 left the greedy
# output unchanged (0/21 held-out answers tagged); 5e-4 gave 21/21 tagged (docs/learning_format.md).
@register_training_method(
    "sft", config_class=SelfEvolveSFTConfig, dataset=_rows, needs=_needs, continue_adapter=False,
    defaults=dict(max_length=512, completion_only_loss=True, learning_rate=5e-4),
)
def build_trainer(model: Any, tokenizer: Any, dataset: Dataset, config: SelfEvolveSFTConfig,
                  callbacks: list | None = None) -> SFTTrainer:
    missing = [c for c in ("prompt", "completion") if c not in dataset.column_names]
    if missing:
        raise ValueError(f"SFT dataset lacks columns {missing}: build it with trainer.datasets.sft_dataset")
    dataset = dataset.select_columns(["prompt", "completion"])
    return SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                      peft_config=lora_config(config, model), callbacks=callbacks)
