"""Policy backends behind one async interface, and :func:`load_policy` to build one from a spec string.

    from agent.policy import SamplingParams, load_policy
    policy = load_policy("default")                     # embedded SmolLM2-135M-Instruct ($SELFEVOLVE_ENGINE)
    policy = load_policy("vllm:default")                # the same on the in-process vLLM engine
    policy = load_policy("engine")                      # attach to `selfevolve engine start`'s server
    policy = load_policy("hf:/models/my-sft", adapter_path="runs/v3/adapter", version="v3")
    policy = load_policy("openai:http://localhost:8000/v1#Qwen/Qwen2.5-1.5B-Instruct", max_tries=5)
    policy = load_policy("pool:http://gpu1:8000/v1,http://gpu2:8000/v1#Qwen/Qwen2.5-1.5B-Instruct")
    completions = await policy.generate([[{"role": "user", "content": "What is 2+3?"}]], SamplingParams())
    await policy.aclose()

A ``pool:`` spec names several OpenAI-compatible (vLLM) servers: requests go to the one with the fewest in
flight, a failing server is skipped for a while, and ``set_adapter`` pushes a LoRA adapter to every server
before the served name switches (:mod:`agent.policy.pool_backend`).

Backends import their heavy dependencies (torch, httpx, vllm) only when built. Which engine runs the
embedded model for ``default`` is ``$SELFEVOLVE_ENGINE``: ``transformers`` (the default) or ``vllm``
(see docs/engines.md for why and the numbers).
"""

from __future__ import annotations

from typing import Any

from agent.policy.base import (
    Chat,
    Completion,
    FinishReason,
    ModelSpec,
    Policy,
    SamplingParams,
    parse_model_spec,
)
from agent.policy.batcher import BatcherClosedError, MicroBatcher

__all__ = [
    "BatcherClosedError",
    "Chat",
    "Completion",
    "FinishReason",
    "MicroBatcher",
    "ModelSpec",
    "Policy",
    "SamplingParams",
    "load_policy",
    "parse_model_spec",
]


def load_policy(spec: str, adapter_path: str | None = None, version: str = "base", **opts: Any) -> Policy:
    """Build the policy named by ``spec`` (see :class:`ModelSpec` for the forms), serving ``version``.

    ``adapter_path`` is a PEFT LoRA adapter dir (transformers, vllm; for pool, as its servers see it: it is
    pushed to every one) or, for openai, marks ``version`` as a served adapter name (see
    :mod:`agent.policy.openai_backend`). ``opts`` go to the backend's
    constructor (e.g. ``window_ms``, ``max_batch_size``; ``timeout_s``, ``max_tries``).

    Raises ValueError for a malformed spec (listing the accepted forms), ``ModelNotFoundError`` for a
    local model dir that does not exist, ImportError (with the pip command) for a missing extra.
    """
    parsed = parse_model_spec(spec)
    if parsed.backend == "transformers" and parsed.path == "default" and default_engine() == "vllm":
        parsed = parse_model_spec("vllm:default")
    if parsed.backend == "python":
        return _plugin_policy(parsed.path, adapter_path=adapter_path, version=version, **opts)
    if parsed.backend == "openai":
        from agent.policy.openai_backend import OpenAIPolicy

        policy: Policy = OpenAIPolicy(parsed.path, parsed.model or "", version=version, **opts)
        if adapter_path is not None:
            policy.set_adapter(version, adapter_path)
        return policy
    if parsed.backend == "pool":
        from agent.policy.pool_backend import PoolPolicy

        pool = PoolPolicy(parsed.urls, parsed.model or "", version="base", **opts)
        pool.set_adapter(version, adapter_path)  # pushes the adapter to every server (or raises)
        return pool
    if parsed.backend == "vllm":
        from agent.policy.vllm_backend import VLLMPolicy

        return VLLMPolicy(parsed.path, adapter_path=adapter_path, version=version, **opts)
    from trainer.models import resolve_model_path

    resolve_model_path(parsed.path)  # fail fast with a clear error before importing torch
    from agent.policy.transformers_backend import TransformersPolicy

    return TransformersPolicy(parsed.path, adapter_path=adapter_path, version=version, **opts)


def default_engine() -> str:
    """``$SELFEVOLVE_ENGINE`` (transformers | vllm): the engine behind the ``default`` spec."""
    import os

    engine = os.environ.get("SELFEVOLVE_ENGINE", "transformers") or "transformers"
    if engine not in ("transformers", "vllm"):
        raise ValueError(f"$SELFEVOLVE_ENGINE must be 'transformers' or 'vllm', got {engine!r}")
    return engine


def _plugin_policy(target: str, **kwargs: Any) -> Policy:
    """``python:<module>:<factory>``: a Policy from user code (a custom backend, or a scripted one in tests)."""
    import importlib

    module_name, _, attr = target.rpartition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot load policy factory python:{target}: {e}") from e
    policy = factory(**kwargs)
    if not isinstance(policy, Policy):
        raise TypeError(f"python:{target} returned {type(policy).__name__}, not an agent.policy.Policy")
    return policy
