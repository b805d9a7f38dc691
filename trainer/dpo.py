"""DPO on preference pairs of one task (successful vs failed reflection or answer) with TRL's DPOTrainer.

    selfevolve train --method dpo --env arithmetic --steps 20

Pairs come from :func:`trainer.datasets.dpo_dataset` (conversational prompt/chosen/rejected). With
LoRA the reference model is the same network with the adapter disabled, so no second copy is loaded.
"""

from __future__ import annotations

from typing import Any

from datasets import Dataset
from trl import DPOTrainer

from . import datasets as D
from .config import SelfEvolveDPOConfig, lora_config
from .methods import register_training_method


@register_training_method(
    "dpo", config_class=SelfEvolveDPOConfig, dataset=lambda episodes, env, config: D.dpo_dataset(episodes, env),
    defaults=dict(max_length=512, beta=0.1), needs="task with both a successful and a failed attempt/reflection",
)
def build_trainer(model: Any, tokenizer: Any, dataset: Dataset, config: SelfEvolveDPOConfig,
                  callbacks: list | None = None) -> DPOTrainer:
    missing = [c for c in ("prompt", "chosen", "rejected") if c not in dataset.column_names]
    if missing:
        raise ValueError(f"DPO dataset lacks columns {missing}: build it with trainer.datasets.dpo_dataset")
    dataset = dataset.select_columns(["prompt", "chosen", "rejected"])
    return DPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                      peft_config=lora_config(config, model), callbacks=callbacks)
