"""Tokens/s of the transformers backend through the micro-batcher vs raw ``model.generate``.

Question: does our serving path (chat rendering, tokenization, the batching window, the worker-thread
hop, decoding, stop/finish handling) cost anything next to a bare ``model.generate`` on the same,
pre-tokenized batch? Target: >= 0.95x raw at every batch size.

Method: B concurrent callers each ask for one greedy completion of a different prompt, so the batcher
merges them into one batch of B; the raw side calls ``model.generate`` once on the same B prompts,
already tokenized (tokenization is not timed for raw: the comparison is strict against us). Both use
the same GenerationConfig and produce the same tokens (checked). The two sides alternate within each
repeat, and which goes first flips every repeat, so a noisy, shared CPU hits both alike. We report the
median tokens/s of each side and the median of the per-repeat ratios. On a busy machine those ratios
scatter by +-20% from noise alone, so we also report our overhead directly and noise-free: the wall
time of the batched call minus the ``model.generate`` time measured inside the backend (rendering,
tokenization, the batching window, the thread hop, decoding).

    .venv/bin/python -m bench.micro.generate                          # embedded model, 64 tokens, batches 1,8,32
    .venv/bin/python -m bench.micro.generate --model hf:/tmp/tiny --max-tokens 32 --batches 1,8 --repeats 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from agent.policy import SamplingParams, load_policy
from agent.policy.transformers_backend import TransformersPolicy

QUESTIONS = [
    "What is 2+3?",
    "Name a primary color.",
    "Write one sentence about the sea.",
    "What is the capital of France? Answer in one word.",
    "Explain, briefly, why the sky looks blue during the day.",
    "List three fruits.",
    "Translate 'good morning' into Spanish.",
    "What is 12 times 7? Show your working step by step, then give the final number.",
]


def prompts(count: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"{QUESTIONS[i % len(QUESTIONS)]} (#{i})"}] for i in range(count)]


def generated_tokens(rows: list[list[int]], eos: set[int]) -> int:
    """New tokens per row up to and including the first EOS (what the backend reports)."""
    total = 0
    for row in rows:
        ends = [k for k, t in enumerate(row) if t in eos]
        total += ends[0] + 1 if ends else len(row)
    return total


def run_raw(policy: TransformersPolicy, chats: list[list[dict[str, str]]], params: SamplingParams) -> tuple[float, int]:
    import torch

    from agent.policy.chat import chat_prompt

    tok = policy.tokenizer
    enc = tok([chat_prompt(tok, c) for c in chats], return_tensors="pt", padding=True, add_special_tokens=False)
    config = policy.generation_config(params, 1)
    start = time.perf_counter()
    with torch.inference_mode():
        output = policy.model.generate(**enc, generation_config=config)
    elapsed = time.perf_counter() - start
    rows = output[:, enc["input_ids"].shape[1] :].tolist()
    return elapsed, generated_tokens(rows, policy.eos_ids)


async def run_ours(
    policy: TransformersPolicy, chats: list[list[dict[str, str]]], params: SamplingParams
) -> tuple[float, int, float]:
    """Wall time, tokens, and our overhead: wall time minus the ``model.generate`` time inside the backend."""
    start = time.perf_counter()
    results = await asyncio.gather(*(policy.generate([chat], params) for chat in chats))
    elapsed = time.perf_counter() - start
    generate_s = max(r[0].latency_s for r in results)
    return elapsed, sum(r[0].completion_tokens for r in results), elapsed - generate_s


async def bench(model: str, max_tokens: int, batches: list[int], repeats: int) -> list[dict[str, float]]:
    policy = load_policy(model, max_batch_size=max(batches))
    if not isinstance(policy, TransformersPolicy):
        sys.exit(f"this benchmark needs a transformers model spec (default or hf:<dir>), got {model!r}")
    params = SamplingParams(max_tokens=max_tokens)
    await run_ours(policy, prompts(2), params)  # warm up both paths (first-call allocations)
    run_raw(policy, prompts(2), params)
    rows = []
    for size in batches:
        chats = prompts(size)
        ours_tps, raw_tps, ratios, overheads, walls = [], [], [], [], []
        for r in range(repeats):
            if r % 2 == 0:
                raw_s, raw_tokens = run_raw(policy, chats, params)
                ours_s, ours_tokens, overhead = await run_ours(policy, chats, params)
            else:
                ours_s, ours_tokens, overhead = await run_ours(policy, chats, params)
                raw_s, raw_tokens = run_raw(policy, chats, params)
            if ours_tokens != raw_tokens:
                print(f"warning: batch {size}: backend made {ours_tokens} tokens, raw {raw_tokens}", file=sys.stderr)
            ours_tps.append(ours_tokens / ours_s)
            raw_tps.append(raw_tokens / raw_s)
            ratios.append(ours_tps[-1] / raw_tps[-1])
            overheads.append(overhead)
            walls.append(ours_s)
            print(f"batch {size:>3} repeat {r + 1}: raw {raw_tps[-1]:7.1f} tok/s, ours {ours_tps[-1]:7.1f} tok/s", file=sys.stderr)
        rows.append(
            {
                "batch": size,
                "tokens": raw_tokens,
                "raw": statistics.median(raw_tps),
                "ours": statistics.median(ours_tps),
                "ratio": statistics.median(ratios),
                "min_ratio": min(ratios),
                "overhead_ms": 1000 * statistics.median(overheads),
                "overhead_share": statistics.median(o / w for o, w in zip(overheads, walls, strict=True)),
            }
        )
    await policy.aclose()
    return rows


def table(rows: list[dict[str, float]], model: str, max_tokens: int, repeats: int) -> str:
    lines = [
        f"Transformers backend through the micro-batcher vs raw `model.generate` (model `{model}`, greedy, "
        f"{max_tokens} new tokens max, median of {repeats} alternating repeats; target ratio >= 0.95).",
        "",
        "| batch | tokens/batch | raw tok/s | ours tok/s | ours/raw (median) | ours/raw (worst) "
        "| our overhead per batch (ms) | overhead share of wall time |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['batch']} | {row['tokens']} | {row['raw']:.1f} | {row['ours']:.1f} | "
            f"{row['ratio']:.3f} | {row['min_ratio']:.3f} | {row['overhead_ms']:.1f} | {100 * row['overhead_share']:.2f}% |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="transformers model spec: default or hf:<dir>")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--batches", default="1,8,32", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only; do not update docs/benchmarks.md")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    rows = asyncio.run(bench(args.model, args.max_tokens, batches, args.repeats))
    markdown = table(rows, args.model, args.max_tokens, args.repeats)
    print(markdown)
    if not args.no_write:
        from bench._report import write_section

        command = f"python -m bench.micro.generate --model {args.model} --max-tokens {args.max_tokens} --batches {args.batches} --repeats {args.repeats}"
        print(f"wrote {write_section('generate', markdown, command)}")


if __name__ == "__main__":
    main()
