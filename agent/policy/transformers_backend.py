"""The embedded backend: a Hugging Face causal LM on this machine (CPU by default).

Design:
- Weights load through :mod:`trainer.models` (local disk only, left padding, pad = eos for SmolLM2,
  torch threads = cores or ``$SELFEVOLVE_THREADS``). Chats are rendered with :func:`agent.policy.chat.chat_prompt` so the
  template never injects a default system prompt.
- Concurrent ``generate`` calls go through a :class:`~agent.policy.batcher.MicroBatcher`: requests with
  the same SamplingParams and model version become one left-padded batch with an attention mask.
- ``model.generate`` runs on one dedicated worker thread (never on the event loop), under a lock that
  adapter swaps also take, so a swap never lands in the middle of a batch.
- LoRA adapters (PEFT) are loaded once per version next to the base weights and switched per batch
  with ``PeftModel.set_adapter``; the base is served with the adapters disabled. Each Completion's
  ``model_version`` is the version the request was submitted under.

Determinism (be precise about what is promised):
- Greedy (temperature 0) output does not depend on batching: left padding plus the attention mask give
  the same tokens as an unbatched call (float32; checked by tests/test_policy_transformers.py). In
  bfloat16 (the default where the CPU has AVX-512-BF16, ``$SELFEVOLVE_DTYPE`` overrides) padding can
  flip a near-tie; measured on 48 held-out arithmetic tasks, bf16 greedy accuracy was not lower than
  fp32's (docs/engines.md).
- HF ``generate`` cannot take a per-request ``torch.Generator``. A sampled request with a ``seed`` is
  therefore run in a batch of its own (never merged with other callers) under ``torch.manual_seed(seed)``
  inside ``torch.random.fork_rng`` (the global RNG is left untouched): the same chats + params + seed +
  model give the same samples on the same machine and torch build, whatever else runs concurrently.
  Sampled requests without a seed share batches and draw from the global torch RNG (not reproducible).

    python -c "import asyncio; from agent.policy import load_policy, SamplingParams; \
p = load_policy('default'); print(asyncio.run(p.generate([[{'role':'user','content':'Hi'}]], SamplingParams(max_tokens=16))))"
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from agent.policy.base import Chat, Completion, FinishReason, ModelSpec, Policy, SamplingParams
from agent.policy.batcher import MicroBatcher


@dataclass(frozen=True)
class BatchKey:
    """What requests must share to be merged: the model version and the sampling params.

    ``solo`` is a fresh object for seeded sampling, so such a request never shares a batch.
    """

    version: str
    params: SamplingParams
    solo: object | None = None


class TransformersPolicy(Policy):
    """A local HF model behind the async Policy interface, with micro-batching and LoRA versions."""

    def __init__(
        self,
        path: str = "default",
        *,
        adapter_path: str | None = None,
        version: str = "base",
        window_ms: float = 5.0,
        max_batch_size: int = 32,
        dtype: str | None = None,
    ) -> None:
        from trainer.models import default_inference_dtype, load_model_and_tokenizer

        self.spec = ModelSpec("transformers", path)
        dtype = dtype or default_inference_dtype()  # bf16 on an AVX-512-BF16 CPU (1.2-2.2x, docs/benchmarks.md)
        self.dtype = dtype
        self.model, self.tokenizer = load_model_and_tokenizer(path, dtype=dtype)
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        self._lock = threading.Lock()  # held by a running batch and by adapter swaps
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="selfevolve-generate")
        self._versions: dict[str, str | None] = {}  # version -> adapter dir (None = the base weights)
        self.batcher: MicroBatcher[Chat, BatchKey, Completion] = MicroBatcher(
            self._run_batch,
            window_ms=window_ms,
            max_batch_size=max_batch_size,
            results_per_item=lambda key: key.params.n,
        )
        self.set_adapter(version, adapter_path)

    # -- Policy -------------------------------------------------------------------------------
    async def generate(self, chats: list[Chat], params: SamplingParams) -> list[Completion]:
        if not chats:
            return []
        if params.greedy and params.seed is not None:
            params = replace(params, seed=None)  # greedy ignores the seed: let such requests share batches
        solo = object() if params.seed is not None else None
        return await self.batcher.submit(chats, BatchKey(self.version, params, solo))

    def set_adapter(self, version: str, adapter_path: str | None) -> None:
        """Serve ``version``: a PEFT LoRA adapter dir over the base, or the base itself if path is None.

        Each adapter is loaded once (≈0.3 s) and kept; swapping back to a loaded version is instant,
        and the base is served with adapters disabled (bit-identical to the unwrapped base). Requests
        already queued keep the version they were submitted under. This waits for a running batch to
        finish; from async code call it as ``await asyncio.to_thread(policy.set_adapter, v, path)``.
        """
        if adapter_path is not None:
            adapter_dir = Path(adapter_path).expanduser()
            if not (adapter_dir / "adapter_config.json").exists():
                raise FileNotFoundError(
                    f"{adapter_dir} is not a PEFT adapter directory (no adapter_config.json); "
                    "pass the directory written by `model.save_pretrained` of a PeftModel"
                )
            adapter_path = str(adapter_dir.resolve())
            with self._lock:
                self._load_adapter(version, adapter_path)
        self._versions[version] = adapter_path
        self.version = version

    async def aclose(self) -> None:
        await self.batcher.aclose()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- internals ----------------------------------------------------------------------------
    def _load_adapter(self, version: str, adapter_path: str) -> None:
        from peft import PeftModel

        if isinstance(self.model, PeftModel):
            if version in self.model.peft_config:
                if self._versions.get(version) == adapter_path:
                    return
                self.model.delete_adapter(version)  # same version name, new weights
            self.model.load_adapter(adapter_path, adapter_name=version, is_trainable=False)
        else:
            self.model = PeftModel.from_pretrained(self.model, adapter_path, adapter_name=version, is_trainable=False)
        self.model.eval()

    def _activate(self, version: str) -> contextlib.AbstractContextManager[Any]:
        """Select ``version``'s adapter; returns the context to generate in (adapters off for the base)."""
        adapter = self._versions.get(version)
        if adapter is None:
            disable = getattr(self.model, "disable_adapter", None)
            return disable() if disable is not None else contextlib.nullcontext()
        self.model.set_adapter(version)
        return contextlib.nullcontext()

    async def _run_batch(self, chats: list[Chat], key: BatchKey) -> list[Completion]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.generate_batch_sync, chats, key)

    def generate_batch_sync(self, chats: list[Chat], key: BatchKey) -> list[Completion]:
        """One padded ``model.generate`` over ``chats`` (blocking; runs on the worker thread)."""
        import torch

        from agent.policy.chat import chat_prompt

        params = key.params
        tok = self.tokenizer
        prompts = [chat_prompt(tok, chat) for chat in chats]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        self._check_length(enc["input_ids"].shape[1], params.max_tokens)
        # Greedy n>1 would give n identical rows; HF refuses it, so generate once and copy.
        samples = 1 if params.greedy else params.n
        rng = torch.random.fork_rng(devices=[]) if params.seed is not None else contextlib.nullcontext()
        start = time.perf_counter()
        with self._lock, torch.inference_mode(), rng:
            if params.seed is not None:
                torch.manual_seed(params.seed)
            with self._activate(key.version):
                output = self.model.generate(
                    **enc,
                    generation_config=self.generation_config(params, samples),
                    tokenizer=tok if params.stop else None,
                )
        latency = time.perf_counter() - start
        prompt_lengths = enc["attention_mask"].sum(dim=1).tolist()
        new_tokens = output[:, enc["input_ids"].shape[1] :].tolist()
        completions: list[Completion] = []
        for i, prompt_len in enumerate(prompt_lengths):
            for j in range(params.n):
                row = new_tokens[i * samples + (j if samples > 1 else 0)]
                completions.append(self._completion(row, int(prompt_len), params, key.version, latency))
        return completions

    def generation_config(self, params: SamplingParams, samples: int) -> Any:
        from transformers import GenerationConfig

        sampling = {} if params.greedy else {"temperature": params.temperature, "top_p": params.top_p, "top_k": 0}
        return GenerationConfig(
            max_new_tokens=params.max_tokens,
            do_sample=not params.greedy,
            num_return_sequences=samples,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=sorted(self.eos_ids),
            stop_strings=list(params.stop) or None,
            **sampling,
        )

    def _completion(self, row: list[int], prompt_len: int, params: SamplingParams, version: str, latency: float) -> Completion:
        """Cut a generated row at its end (EOS kept, as vLLM counts it), apply stop strings."""
        finish: FinishReason = "length"
        ids = row
        for k, token in enumerate(row):
            if token in self.eos_ids:
                ids, finish = row[: k + 1], "stop"
                break
        else:
            pad = self.tokenizer.pad_token_id
            while ids and pad is not None and ids[-1] == pad and len(ids) < params.max_tokens:
                ids = ids[:-1]  # padding after a stop string (only when pad != eos)
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        cut = min((pos for pos in (text.find(s) for s in params.stop) if pos >= 0), default=-1)
        if cut >= 0:
            text, finish = text[:cut], "stop"
        elif finish == "length" and len(ids) < params.max_tokens:
            finish = "stop"  # stopped by a stop string that straddles special tokens
        return Completion(
            text=text,
            prompt_tokens=prompt_len,
            completion_tokens=len(ids),
            finish_reason=finish,
            token_ids=ids,
            model_version=version,
            latency_s=latency,
        )

    def _check_length(self, prompt_len: int, max_tokens: int) -> None:
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit and prompt_len + max_tokens > limit:
            raise ValueError(
                f"prompt ({prompt_len} tokens) + max_tokens ({max_tokens}) exceeds the model's context of "
                f"{limit} tokens; shorten the prompt or lower max_tokens"
            )


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(int(x) for x in source)
    return ids
