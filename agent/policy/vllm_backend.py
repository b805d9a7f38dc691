"""In-process vLLM engine (GPU): the fast path for training-time rollouts.

``vllm`` is an optional extra (``pip install 'selfevolve[vllm]'``); it is imported only when this
backend is built. One ``LLM`` engine is created with ``enable_lora=True``; every model version is a
``LoRARequest`` (name = version, a stable integer id, the adapter dir), so swapping versions costs
nothing and requests of different versions can be in flight together. Concurrent callers go through
the same :class:`~agent.policy.batcher.MicroBatcher` as the transformers backend, and ``LLM.generate``
(blocking, not thread-safe) runs on one worker thread.

Not exercised on the CPU-only CI machine; tests skip when vllm is absent.

    selfevolve generate "What is 2+3?" --model vllm:/path/to/hf_model_dir
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from agent.policy.base import Chat, Completion, ModelSpec, Policy, SamplingParams
from agent.policy.batcher import MicroBatcher

INSTALL_HINT = "the vllm backend needs vLLM and a GPU: pip install 'selfevolve[vllm]'"


def import_vllm() -> Any:
    """Import vllm or raise ImportError that says how to install it."""
    try:
        import vllm
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} ({e})") from e
    return vllm


@dataclass(frozen=True)
class _Key:
    version: str
    params: SamplingParams


class VLLMPolicy(Policy):
    """A vLLM ``LLM`` engine with LoRA versions; ``engine_kwargs`` go to ``vllm.LLM`` unchanged."""

    def __init__(
        self,
        path: str,
        *,
        adapter_path: str | None = None,
        version: str = "base",
        max_lora_rank: int = 64,
        max_loras: int = 4,
        window_ms: float = 5.0,
        max_batch_size: int = 256,
        **engine_kwargs: Any,
    ) -> None:
        vllm = import_vllm()
        from trainer.models import resolve_model_path

        self._vllm = vllm
        self.spec = ModelSpec("vllm", path)
        local = resolve_model_path(path)
        self.llm = vllm.LLM(
            model=str(local), enable_lora=True, max_lora_rank=max_lora_rank, max_loras=max_loras, **engine_kwargs
        )
        self.tokenizer = self.llm.get_tokenizer()
        self._lora: dict[str, Any] = {}  # version -> LoRARequest (absent = the base)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="selfevolve-vllm")
        self.batcher: MicroBatcher[Chat, _Key, Completion] = MicroBatcher(
            self._run_batch, window_ms=window_ms, max_batch_size=max_batch_size, results_per_item=lambda k: k.params.n
        )
        self.set_adapter(version, adapter_path)

    async def generate(self, chats: list[Chat], params: SamplingParams) -> list[Completion]:
        if params.greedy and params.seed is not None:
            params = replace(params, seed=None)
        return await self.batcher.submit(chats, _Key(self.version, params))

    def set_adapter(self, version: str, adapter_path: str | None) -> None:
        """Serve ``version``: a LoRA adapter dir (loaded by vLLM on first use) or the base if None."""
        if adapter_path is None:
            self._lora.pop(version, None)
        else:
            adapter_dir = Path(adapter_path).expanduser().resolve()
            if not (adapter_dir / "adapter_config.json").exists():
                raise FileNotFoundError(f"{adapter_dir} is not a PEFT adapter directory (no adapter_config.json)")
            existing = self._lora.get(version)
            if existing is None or existing.lora_path != str(adapter_dir):
                from vllm.lora.request import LoRARequest

                lora_id = 1 + max((r.lora_int_id for r in self._lora.values()), default=0)
                self._lora[version] = LoRARequest(version, lora_id, str(adapter_dir))
        self.version = version

    async def aclose(self) -> None:
        await self.batcher.aclose()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run_batch(self, chats: list[Chat], key: _Key) -> list[Completion]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._generate_sync, chats, key)

    def _generate_sync(self, chats: list[Chat], key: _Key) -> list[Completion]:
        from agent.policy.chat import chat_prompt

        p = key.params
        copies = p.n if p.greedy else 1  # older vLLM refuses n > 1 with greedy: sample once, copy
        sampling = self._vllm.SamplingParams(
            n=1 if p.greedy else p.n, temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens, stop=list(p.stop) or None, seed=p.seed
        )
        prompts = [chat_prompt(self.tokenizer, chat) for chat in chats]
        start = time.perf_counter()
        outputs = self.llm.generate(prompts, sampling, lora_request=self._lora.get(key.version), use_tqdm=False)
        latency = time.perf_counter() - start
        return [
            Completion(
                text=sample.text,
                prompt_tokens=len(request.prompt_token_ids or []),
                completion_tokens=len(sample.token_ids),
                finish_reason="length" if sample.finish_reason == "length" else "stop",
                token_ids=list(sample.token_ids),
                model_version=key.version,
                latency_s=latency,
            )
            for request in outputs
            for sample in sorted(request.outputs, key=lambda s: s.index)
            for _ in range(copies)
        ]
