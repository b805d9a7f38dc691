"""GRPO and R3 sampling on the project's vLLM engine, with the live training weights synced per step.

Why not TRL's own ``use_vllm`` (colocate): it writes weights with ``model.load_weights`` straight into
vLLM's model, which fails on vLLM-CPU (its linear layers repack weights after loading: "Attempted to
load weight (576, 1536) into parameter (0,)"), and its ``external_launcher`` executor assumes a
distributed launch. Here the engine (:mod:`agent.policy.vllm_engine`) reloads weights through vLLM's
in-place reload (which re-runs that processing), once per optimizer step.

- :func:`merged_named_weights`: the trained model's weights in checkpoint names, each LoRA layer's
  delta added (``W + scale·B·A`` from PEFT's ``get_delta_weight``) without touching the model.
- :class:`EngineSync`: pushes them to the engine when the step changed, or when the engine has swapped
  to another version since (a daemon serving from the same engine).
- :class:`EngineSamplingMixin`: overrides GRPOTrainer's ``_generate_single_turn`` (one hook) so the
  completions (reflections for R3, answers for GRPO) are sampled on the engine with the trainer's
  temperature/top-p/top-k and ``max_completion_length``.
- :class:`EngineGenerate`: the R3 retry generation (greedy, chats → texts) on the same engine and weights.

Sampling runs in the engine's dtype (bf16 on this CPU) while the loss is computed in fp32: a small
off-policy gap, the same one every vLLM-sampled GRPO run has.

    selfevolve train --method grpo-reflection --steps 20      # with SELFEVOLVE_ENGINE=vllm
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from environments.chat import with_system

_SYNC_IDS = itertools.count()


def merged_named_weights(model: Any, dtype: Any) -> Iterator[tuple[str, Any]]:
    """``(checkpoint name, tensor)`` of ``model`` (a PeftModel or a plain HF model), LoRA deltas merged."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    deltas: dict[str, Any] = {}
    with torch.no_grad():
        try:
            from peft.tuners.lora import LoraLayer
        except ImportError:  # pragma: no cover - peft is a dependency
            LoraLayer = ()  # type: ignore[assignment]  # noqa: N806
        for name, module in base.named_modules():
            if isinstance(module, LoraLayer) and not getattr(module, "merged", False):
                active = [a for a in module.active_adapters if a in module.lora_A]
                if active and not getattr(module, "disable_adapters", False):
                    deltas[f"{name}.weight"] = sum(module.get_delta_weight(a) for a in active)
        for name, param in base.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                continue
            clean = name.replace(".base_layer", "")
            weight = param.detach()
            if clean in deltas:
                weight = weight + deltas[clean]
            yield clean, weight.to(dtype=dtype, copy=True)


class EngineSync:
    """Keeps the engine's weights equal to the live model's as of the last synced step."""

    def __init__(self, engine: Any, model: Any) -> None:
        import torch

        self.engine, self.model = engine, model
        self.dtype = getattr(torch, engine.dtype)
        self.version = f"train-live-{next(_SYNC_IDS)}"
        self.step: int | None = None
        self.syncs = 0

    def ensure(self, step: int | None = None) -> None:
        """Push the weights if ``step`` differs from the last push, or the engine now holds other weights."""
        step = self.step if step is None else step
        if step == self.step and self.step is not None and self.engine.live == self.version:
            return
        self.engine.load_weights(merged_named_weights(self.model, self.dtype), version=self.version)
        self.step = step if step is not None else 0
        self.syncs += 1

    def run(self, prompt_ids: list[list[int]], sampling: Any) -> list[Any]:
        self.ensure()
        return self.engine.submit(prompt_ids, sampling, weights=self.version).result()


def vllm_sampling(engine: Any, *, max_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
                  top_k: int | None = None, min_p: float | None = None, repetition_penalty: float = 1.0) -> Any:
    from vllm.sampling_params import RequestOutputKind

    return engine.vllm.SamplingParams(
        n=1, max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k if top_k else -1,
        min_p=min_p or 0.0, repetition_penalty=repetition_penalty or 1.0, output_kind=RequestOutputKind.FINAL_ONLY,
    )


class EngineSamplingMixin:
    """Put before ``GRPOTrainer`` in the bases; call :meth:`attach_engine` after ``super().__init__``."""

    engine_sync: EngineSync | None = None

    def attach_engine(self, engine: Any) -> EngineSync:
        model = self.accelerator.unwrap_model(self.model)  # type: ignore[attr-defined]
        self.engine_sync = EngineSync(engine, model)
        return self.engine_sync

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        sync = self.engine_sync
        if sync is None or images or multimodal_fields:
            return super()._generate_single_turn(  # type: ignore[misc]
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images)
        sync.ensure(self.state.global_step)  # type: ignore[attr-defined]
        sampling = vllm_sampling(
            sync.engine, max_tokens=self.max_completion_length, temperature=self.temperature,  # type: ignore[attr-defined]
            top_p=self.top_p, top_k=self.top_k, min_p=self.min_p, repetition_penalty=self.repetition_penalty,  # type: ignore[attr-defined]
        )
        outputs = sync.run([list(p) for p in prompt_ids], sampling)
        return [list(o.outputs[0].token_ids) for o in outputs], None


class EngineGenerate:
    """Chats → texts on the engine with the synced training weights (the R3 retry; greedy by default)."""

    def __init__(self, sync: EngineSync, tokenizer: Any, max_new_tokens: int = 64, temperature: float = 0.0) -> None:
        self.sync, self.tokenizer = sync, tokenizer
        self.max_new_tokens, self.temperature = max_new_tokens, temperature

    def __call__(self, chats: list[list[dict[str, str]]]) -> list[str]:
        tok = self.tokenizer
        prompts = [tok.encode(tok.apply_chat_template(with_system(c), tokenize=False, add_generation_prompt=True),
                              add_special_tokens=False) for c in chats]
        sampling = vllm_sampling(self.sync.engine, max_tokens=self.max_new_tokens, temperature=self.temperature)
        outputs = self.sync.run(prompts, sampling)
        return [tok.decode(o.outputs[0].token_ids, skip_special_tokens=True) for o in outputs]


def wants_engine(config: Any) -> bool:
    """Whether ``config`` (its ``generation_engine``, else ``$SELFEVOLVE_ENGINE``) asks for vLLM."""
    import os

    choice = getattr(config, "generation_engine", None) or "auto"
    if choice == "auto":
        choice = os.environ.get("SELFEVOLVE_ENGINE", "") or "transformers"
    if choice not in ("transformers", "vllm"):
        raise ValueError(f"generation_engine must be auto, transformers or vllm, got {choice!r}")
    return choice == "vllm"


def attach_if_wanted(trainer: Any, config: Any) -> EngineSync | None:
    """Give ``trainer`` (an :class:`EngineSamplingMixin`) the engine for its model's base dir when asked."""
    if not wants_engine(config):
        return None
    from pathlib import Path

    from agent.policy.vllm_engine import get_engine  # the engine is the agent's; imported only when used

    model = trainer.accelerator.unwrap_model(trainer.model)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    source = getattr(base, "name_or_path", "") or getattr(config, "base_model", "default")
    if source != "default" and not (Path(source) / "config.json").exists():
        raise ValueError(f"generation_engine=vllm needs the model loaded from a local dir, got {source!r}")
    return trainer.attach_engine(get_engine(source))
