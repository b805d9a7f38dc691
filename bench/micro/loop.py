"""Throughput of the full episode graph per engine: vs its engine's raw replay, vs the sequential graph.

    python -m bench.micro.loop                      # embedded model, transformers vs vllm, 32 arithmetic episodes, writes docs
    python -m bench.micro.loop --engines vllm --episodes 16 --sequential 4 --no-write

What is compared, in one process and one run (repeats alternate the engines; this box is shared and noisy):
- Engines: ``transformers`` = today's fp32 path, ``transformers-bf16`` = the fallback, ``vllm``.
- **graph**: ``run_episodes`` with ``concurrency = episodes``. Transformers: every node's calls go
  through the micro-batcher (static batches). vLLM: every call joins the running batch at the next
  engine step (continuous batching). Greedy decoding, so the raw replay produces the same tokens.
- **raw**: the *same* prompts the graph sent (read back from the recorded attempts), grouped by phase
  (attempt index, node) as the graph's lock-step would group them and fed straight to the engine:
  ``model.generate`` in batches of ``--max-batch`` (transformers), or one ``Engine.submit`` of the whole
  phase (vLLM: token ids in, no chat rendering, no asyncio). The ceiling the graph is measured against.
- **sequential**: the graph with ``concurrency = 1`` on the first ``--sequential`` tasks.
Targets (issue 16): vLLM graph ≥ 3× the transformers graph at concurrency 32, ≥ 3× its own sequential
graph, and ≥ 0.9× its engine's raw replay.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections import defaultdict

from agent.graph import EpisodeConfig, GraphDeps
from agent.policy import load_policy
from agent.policy.chat import chat_prompt
from agent.runner import run_episodes
from environments import get_environment

SPECS = {"transformers": "default", "transformers-bf16": "default", "vllm": "vllm:default"}
OPTS = {"transformers": {"dtype": "float32"}, "transformers-bf16": {"dtype": "bfloat16"}, "vllm": {}}


def raw_generate(model, tokenizer, chats, max_new_tokens: int, eos_ids: set[int]) -> int:
    """Greedy batched HF generate of ``chats``; returns completion tokens (up to and including EOS)."""
    import torch

    prompts = [chat_prompt(tokenizer, c) for c in chats]
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    tokens = 0
    for row in out[:, enc["input_ids"].shape[1]:].tolist():
        n = 0
        for tok in row:
            n += 1
            if tok in eos_ids:
                break
        tokens += n
    return tokens


def raw_engine(policy, chats, max_new_tokens: int) -> int:
    """One greedy submit of ``chats`` straight to the vLLM engine; returns completion tokens."""
    from trainer.engine_sampling import vllm_sampling

    tok = policy.tokenizer
    ids = [tok.encode(chat_prompt(tok, c), add_special_tokens=False) for c in chats]
    outputs = policy.engine.submit(ids, vllm_sampling(policy.engine, max_tokens=max_new_tokens)).result()
    return sum(len(o.outputs[0].token_ids) for o in outputs)


def replay_raw(policy, episodes, config: EpisodeConfig, max_batch: int) -> tuple[int, float]:
    phases: dict[tuple[int, int], list] = defaultdict(list)
    order = {"solve": 0, "retry": 0, "critique": 1, "reflect": 2}
    limits = {"solve": config.solve_tokens, "retry": config.solve_tokens, "critique": config.critique_tokens,
              "reflect": config.reflect_tokens}
    for ep in episodes:
        for a in ep.attempts:
            for call in (a.solve, a.critique, a.reflect):
                if call is not None:
                    phases[(a.index, order[call.node])].append(call)
    tokens, start = 0, time.perf_counter()
    for key in sorted(phases):
        calls = phases[key]
        limit = limits[calls[0].node]
        if hasattr(policy, "engine"):
            tokens += raw_engine(policy, [c.messages for c in calls], limit)
            continue
        for i in range(0, len(calls), max_batch):
            batch = [c.messages for c in calls[i:i + max_batch]]
            tokens += raw_generate(policy.model, policy.tokenizer, batch, limit, policy.eos_ids)
    return tokens, time.perf_counter() - start


def measure(args) -> dict[str, dict[str, float]]:
    env = get_environment(args.env)
    tasks = env.sample(args.episodes, seed=0)
    config = EpisodeConfig(retrieval=False, temperature=0.0, solve_tokens=args.max_tokens, critique_tokens=32,
                           reflect_tokens=args.max_tokens, record=False)
    loop = asyncio.new_event_loop()
    engines = [e for e in args.engines.split(",") if e]
    deps, loads = {}, {}
    for name in engines:
        start = time.perf_counter()
        extra = {"max_batch_size": args.max_batch} if name.startswith("transformers") else {}
        policy = load_policy(SPECS[name], **OPTS[name], **extra)
        deps[name] = GraphDeps(policy, env, config)
        loop.run_until_complete(run_episodes(tasks[:2], deps[name], concurrency=2))  # warm-up
        loads[name] = time.perf_counter() - start
    samples: dict[str, dict[str, list[float]]] = {n: defaultdict(list) for n in engines}
    for r in range(args.repeats):
        for name in engines[r % len(engines):] + engines[: r % len(engines)]:
            episodes, summary = loop.run_until_complete(run_episodes(tasks, deps[name], concurrency=args.episodes))
            raw_tokens, raw_seconds = replay_raw(deps[name].policy, episodes, config, args.max_batch)
            s = samples[name]
            s["eps"].append(summary.episodes / summary.seconds)
            s["tps"].append(summary.completion_tokens / summary.seconds)
            s["raw_tps"].append(raw_tokens / raw_seconds)
            s["acc"].append(summary.final_accuracy)
            print(f"repeat {r} {name}: graph {summary.completion_tokens} tok in {summary.seconds:.1f}s, "
                  f"raw {raw_tokens} tok in {raw_seconds:.1f}s", flush=True)
            _, seq = loop.run_until_complete(run_episodes(tasks[: args.sequential], deps[name], concurrency=1))
            s["seq_eps"].append(seq.episodes / seq.seconds)
            s["seq_tps"].append(seq.completion_tokens / seq.seconds)
    for d in deps.values():
        loop.run_until_complete(d.policy.aclose())
    out = {n: {k: statistics.median(v) for k, v in s.items()} for n, s in samples.items()}
    for n in out:
        out[n]["load_s"] = loads[n]
    return out


def report(m: dict[str, dict[str, float]], args) -> str:
    mark = {True: "✅", False: "❌"}
    rows = []
    for name, r in m.items():
        rows.append(f"| {name} | raw replay, same prompts by phase | — | {r['raw_tps']:.1f} | 1.00 |")
        rows.append(f"| {name} | graph, concurrency {args.episodes} | {r['eps']:.2f} | {r['tps']:.1f} | "
                    f"{r['tps'] / r['raw_tps']:.2f}× raw |")
        rows.append(f"| {name} | graph, sequential ({args.sequential} episodes) | {r['seq_eps']:.3f} | "
                    f"{r['seq_tps']:.1f} | concurrent is {r['eps'] / r['seq_eps']:.1f}× faster |")
    lines = [
        "## Episode graph throughput per engine (`bench/micro/loop.py`)", "",
        f"{args.episodes} `{args.env}` episodes (solve → critique → verify → reflect → retry, max 2 attempts), "
        f"embedded model, greedy, ≤{args.max_tokens} new tokens per solve/reflect, 32 per critique. Median of "
        f"{args.repeats} repeats, engines alternating.", "",
        "| engine | run | episodes/s | completion tokens/s | ratio |", "|---|---|---|---|---|", *rows,
    ]
    if "vllm" in m and "transformers" in m:
        v, t = m["vllm"], m["transformers"]
        checks = [
            ("vLLM graph vs transformers graph, concurrency " + str(args.episodes), v["eps"] / t["eps"], 3.0),
            ("vLLM graph concurrent vs vLLM graph sequential", v["eps"] / v["seq_eps"], 3.0),
            ("vLLM graph vs its engine's raw replay (tokens/s)", v["tps"] / v["raw_tps"], 0.9),
        ]
        lines += ["", "| target | measured | goal |", "|---|---|---|"]
        lines += [f"| {what} | {got:.2f}× | ≥ {goal}× {mark[got >= goal]} |" for what, got, goal in checks]
        lines += ["", f"Final accuracy (greedy, same tasks): transformers {t['acc']:.2f}, vLLM {v['acc']:.2f} "
                  "(bf16 vs fp32 logits can flip a greedy token). Load in this process: "
                  + ", ".join(f"{n} {r['load_s']:.1f} s" for n, r in m.items()) + " (with a 2-episode warm-up)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", default="transformers,vllm",
                    help="comma-separated: transformers (fp32, today's), transformers-bf16, vllm")
    ap.add_argument("--env", default="arithmetic")
    ap.add_argument("--episodes", type=int, default=32)
    ap.add_argument("--sequential", type=int, default=4, help="Episodes for the sequential run.")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    unknown = sorted(set(args.engines.split(",")) - set(SPECS))
    if unknown:
        raise SystemExit(f"unknown engine(s) {unknown}; choose from {sorted(SPECS)}")
    body = report(measure(args), args)
    print(body)
    if not args.no_write:
        from bench._report import write_section

        cmd = "python -m bench.micro.loop " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "no_write"
        )
        print("wrote", write_section("loop", body, cmd))


if __name__ == "__main__":
    main()
