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

from .config import SelfEvolveSFTConfig, lora_config


def build_trainer(model: Any, tokenizer: Any, dataset: Dataset, config: SelfEvolveSFTConfig,
                  callbacks: list | None = None) -> SFTTrainer:
    missing = [c for c in ("prompt", "completion") if c not in dataset.column_names]
    if missing:
        raise ValueError(f"SFT dataset lacks columns {missing}: build it with trainer.datasets.sft_dataset")
    dataset = dataset.select_columns(["prompt", "completion"])
    return SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                      peft_config=lora_config(config, model), callbacks=callbacks)
