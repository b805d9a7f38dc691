"""The transformers backend on a tiny random Llama (real tokenizer), plus one run of the embedded model.

The tiny model's weights are re-drawn with a large std so greedy outputs differ from prompt to prompt
(at the default init every prompt decodes to the same token, which would make padding checks vacuous).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
import torch

from agent.policy import Completion, SamplingParams, load_policy
from agent.policy.transformers_backend import TransformersPolicy
from trainer.models import make_tiny_model

CHATS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "user", "content": "A much longer prompt, so that the batch needs left padding. Right?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+3?"}],
]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoModelForCausalLM

    base = make_tiny_model(tmp_path_factory.mktemp("tiny-base"))
    out = tmp_path_factory.mktemp("tiny")
    model = AutoModelForCausalLM.from_pretrained(base)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    model.save_pretrained(out)
    for f in base.iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "special_tokens")):
            shutil.copy(f, out / f.name)
    return out


@pytest.fixture(scope="session")
def adapter_dir(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter with non-zero random B weights (a fresh LoRA is a no-op: B starts at zero)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_dir),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=True),
    )
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 2.0)
    out = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def policy(tiny_dir: Path) -> TransformersPolicy:
    built = load_policy(f"hf:{tiny_dir}", window_ms=5, dtype="float32")  # the batching-invariance promise is fp32's
    assert isinstance(built, TransformersPolicy)
    return built


def ids(completions: list[Completion]) -> list[list[int] | None]:
    return [c.token_ids for c in completions]


async def test_batched_greedy_equals_unbatched(policy: TransformersPolicy) -> None:
    params = SamplingParams(max_tokens=12)
    batched = await policy.generate(CHATS, params)
    alone = [(await policy.generate([chat], params))[0] for chat in CHATS]
    assert ids(batched) == ids(alone)
    assert len({tuple(t or ()) for t in ids(batched)}) == len(CHATS)  # the check is not vacuous
    lengths = [c.prompt_tokens for c in batched]
    assert lengths[1] > lengths[0]  # different lengths: the short prompt was left-padded


async def test_concurrent_callers_share_one_batch_and_match_unbatched(policy: TransformersPolicy) -> None:
    params = SamplingParams(max_tokens=6)
    before = policy.batcher.stats.batches
    results = await asyncio.gather(*(policy.generate([chat], params) for chat in CHATS))
    assert policy.batcher.stats.batches == before + 1
    assert [r[0].token_ids for r in results] == ids(await policy.generate(CHATS, params))


async def test_token_counts_and_length_finish(policy: TransformersPolicy) -> None:
    [c] = await policy.generate([CHATS[2]], SamplingParams(max_tokens=7))
    from agent.policy.chat import chat_prompt

    prompt = chat_prompt(policy.tokenizer, CHATS[2])
    assert c.prompt_tokens == len(policy.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert c.completion_tokens == len(c.token_ids or []) == 7
    assert c.finish_reason == "length"
    assert c.text == policy.tokenizer.decode(c.token_ids, skip_special_tokens=True)
    assert c.model_version == "base"


async def test_stop_string_truncates_and_finishes_with_stop(policy: TransformersPolicy) -> None:
    [full] = await policy.generate([CHATS[1]], SamplingParams(max_tokens=16))
    stop = full.text[len(full.text) // 2 :][:3]
    assert stop.strip(), f"need a visible stop string, got {full.text!r}"
    [cut] = await policy.generate([CHATS[1]], SamplingParams(max_tokens=16, stop=(stop,)))
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.find(stop)]
    assert cut.completion_tokens < full.completion_tokens


async def test_sampling_n_and_seed(policy: TransformersPolicy) -> None:
    params = SamplingParams(max_tokens=8, temperature=1.0, n=3, seed=123)
    first = await policy.generate(CHATS[:2], params)
    assert len(first) == 6
    assert len({tuple(t or ()) for t in ids(first[:3])}) > 1  # three different samples of chat 0
    # the same seeded call gives the same samples, even with another caller running concurrently
    again, _ = await asyncio.gather(
        policy.generate(CHATS[:2], params), policy.generate([CHATS[2]], SamplingParams(max_tokens=8, temperature=1.0))
    )
    assert ids(again) == ids(first)
    other = await policy.generate(CHATS[:2], SamplingParams(max_tokens=8, temperature=1.0, n=3, seed=124))
    assert ids(other) != ids(first)


async def test_greedy_n_copies(policy: TransformersPolicy) -> None:
    out = await policy.generate([CHATS[0]], SamplingParams(max_tokens=4, n=2))
    assert len(out) == 2 and out[0].token_ids == out[1].token_ids


async def test_adapter_swap_changes_outputs_and_base_is_restored_exactly(
    tiny_dir: Path, adapter_dir: Path
) -> None:
    swap = TransformersPolicy(str(tiny_dir), window_ms=1, dtype="float32")
    params = SamplingParams(max_tokens=10)
    enc = swap.tokenizer(["What is 2+3?"], return_tensors="pt")

    def logits() -> torch.Tensor:
        with torch.inference_mode(), swap._activate(swap.version):
            return swap.model(**enc).logits

    base_out, base_logits = await swap.generate(CHATS, params), logits()
    swap.set_adapter("v1", str(adapter_dir))
    lora_out, lora_logits = await swap.generate(CHATS, params), logits()
    assert not torch.equal(base_logits, lora_logits)
    assert ids(lora_out) != ids(base_out)
    assert {c.model_version for c in lora_out} == {"v1"}
    swap.set_adapter("base", None)
    restored_out, restored_logits = await swap.generate(CHATS, params), logits()
    assert torch.equal(restored_logits, base_logits)
    assert ids(restored_out) == ids(base_out)
    assert {c.model_version for c in restored_out} == {"base"}
    swap.set_adapter("v1", str(adapter_dir))  # already loaded: no reload, same outputs
    assert ids(await swap.generate(CHATS, params)) == ids(lora_out)
    await swap.aclose()


def test_bad_adapter_path_is_a_clear_error(policy: TransformersPolicy, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a PEFT adapter directory"):
        policy.set_adapter("v9", str(tmp_path))
    assert policy.version == "base"


async def test_event_loop_stays_responsive_during_generation(policy: TransformersPolicy) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    task = asyncio.ensure_future(ticker())
    await policy.generate(CHATS * 4, SamplingParams(max_tokens=48))
    task.cancel()
    assert ticks >= 3


def _cli_app():
    from agent.cli import app

    return app


def test_cli_generate_json(tiny_dir: Path) -> None:
    from typer.testing import CliRunner

    result = CliRunner().invoke(
        _cli_app(), ["generate", "What is 2+3?", "--model", f"hf:{tiny_dir}", "--max-tokens", "5", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) >= {"text", "prompt_tokens", "completion_tokens", "finish_reason", "model"}
    assert data["completion_tokens"] == 5 and data["finish_reason"] == "length"
    assert data["model"] == f"hf:{tiny_dir}"


def test_cli_generate_with_an_adapter(tiny_dir: Path, adapter_dir: Path) -> None:
    from typer.testing import CliRunner

    args = ["generate", "What is 2+3?", "--model", f"hf:{tiny_dir}", "--max-tokens", "4", "--json"]
    result = CliRunner().invoke(_cli_app(), [*args, "--adapter", str(adapter_dir), "--version", "v7"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model_version"] == "v7"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "foo:bar"], "bad model spec"),
        (["--model", "hf:/does/not/exist"], "does not exist"),
        (["--model", "default", "--adapter", "/does/not/exist"], "not a PEFT adapter directory"),
        (["--temperature", "0", "--top-p", "0"], "top_p"),
    ],
)
def test_cli_errors_are_one_clear_line(args: list[str], message: str) -> None:
    from typer.testing import CliRunner

    result = CliRunner().invoke(_cli_app(), ["generate", "hi", *args])
    assert result.exit_code != 0
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


@pytest.mark.embedded
def test_cli_with_the_real_embedded_model() -> None:
    from typer.testing import CliRunner

    result = CliRunner().invoke(_cli_app(), ["generate", "What is 2+3?", "--max-tokens", "24", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"] == "default" and data["completion_tokens"] > 0
    assert any(ch.isalpha() or ch.isdigit() for ch in data["text"])  # real text, not padding


def test_torch_threads_follow_selfevolve_then_omp_then_cores(monkeypatch):
    """A Ray actor with 1 CPU gets OMP_NUM_THREADS=1: its torch must not take every core (issue 21)."""
    import os

    import torch

    from trainer.models import set_torch_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("SELFEVOLVE_THREADS", raising=False)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert set_torch_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("SELFEVOLVE_THREADS", "2")
        assert set_torch_threads() == 2
        monkeypatch.delenv("SELFEVOLVE_THREADS")
        monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
        assert set_torch_threads() == (os.cpu_count() or 1)
    finally:
        torch.set_num_threads(before)
