"""Episodes/s through 1 vs N local vLLM servers behind one ``pool:`` policy (issue 21, generation over N servers).

Question: what does spreading the episode graph's requests over several OpenAI-compatible servers buy,
and what does the pool's client cost? Each server is ``selfevolve engine start``'s ``vllm serve`` (CPU,
eager, LoRA off) on its own port; every count runs the same tasks through ``pool:<first k URLs>#...`` with
``run_episodes`` (concurrency = episodes), so the 1-server row goes through the same client code. With
``--split-cores`` each server's OpenMP threads are bound to its own slice of this machine's cores (one
machine cannot give N servers N times the compute: on 2 cores two servers share the same 2 cores;
the measurement says what that costs or buys, a GPU node per server is the real target).

    python -m bench.micro.servers                                   # 1 vs 2 servers, 32 episodes, writes docs
    python -m bench.micro.servers --servers 1,2 --episodes 4 --max-tokens 16 --repeats 1 --no-write  # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from agent.graph import EpisodeConfig, GraphDeps
from agent.policy import engine_server, load_policy
from agent.runner import run_episodes
from environments import get_environment


def core_slices(n: int) -> list[str]:
    """This process's allowed cores cut into ``n`` slices (a core shared when there are fewer cores)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if n >= len(cpus):
        return [str(cpus[i % len(cpus)]) for i in range(n)]
    size = len(cpus) // n
    return [",".join(str(c) for c in cpus[i * size:(i + 1) * size]) for i in range(n)]


def start_servers(n: int, model: str, workdir: Path, split_cores: bool, timeout_s: float) -> list[tuple[Path, str]]:
    """Start ``n`` servers at once; returns (state file, base URL) for each (stopped by :func:`stop_servers`)."""
    binds = core_slices(n) if split_cores else [None] * n

    def one(i: int) -> tuple[Path, str]:
        state = workdir / f"server{i}" / "engine.json"
        env = {"VLLM_CPU_OMP_THREADS_BIND": binds[i]} if binds[i] else None
        info = engine_server.start(model, state=state, timeout_s=timeout_s, env=env)
        return state, info.base_url

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n) as ex:
        futures = [ex.submit(one, i) for i in range(n)]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:  # stop the ones that did start before reporting the first failure
        stop_servers([(workdir / f"server{i}" / "engine.json", "") for i in range(n)])
        raise errors[0]
    servers = [f.result() for f in futures]
    print(f"{n} server(s) answering after {time.perf_counter() - started:.0f} s", flush=True)
    return servers


def stop_servers(servers: list[tuple[Path, str]]) -> None:
    for state, _ in servers:
        engine_server.stop(state)


def measure(args, urls: list[str]) -> dict[int, dict[str, float]]:
    env = get_environment(args.env)
    tasks = env.sample(args.episodes, seed=0)
    config = EpisodeConfig(retrieval=False, temperature=0.0, solve_tokens=args.max_tokens, critique_tokens=32,
                           reflect_tokens=args.max_tokens, record=False)
    loop = asyncio.new_event_loop()
    counts = [int(k) for k in args.servers.split(",")]
    deps = {}
    for k in counts:
        pool = load_policy(f"pool:{','.join(urls[:k])}#{engine_server.SERVED_NAME}")
        deps[k] = GraphDeps(pool, env, config)
        loop.run_until_complete(run_episodes(tasks[:2], deps[k], concurrency=2))  # warm-up
    samples: dict[int, dict[str, list[float]]] = {k: {"eps": [], "tps": [], "share": []} for k in counts}
    for r in range(args.repeats):
        for k in counts[r % len(counts):] + counts[: r % len(counts)]:  # rotate the order: a noisy box hits all alike
            before = dict(deps[k].policy.completed())
            _, summary = loop.run_until_complete(run_episodes(tasks, deps[k], concurrency=args.episodes))
            done = [n - before[u] for u, n in deps[k].policy.completed().items()]
            s = samples[k]
            s["eps"].append(summary.episodes / summary.seconds)
            s["tps"].append(summary.completion_tokens / summary.seconds)
            s["share"].append(max(done) / max(sum(done), 1))
            print(f"repeat {r}, {k} server(s): {summary.episodes} episodes in {summary.seconds:.1f} s, "
                  f"requests per server {done}, errors {len(summary.errors)}", flush=True)
    for d in deps.values():
        loop.run_until_complete(d.policy.aclose())
    return {k: {name: statistics.median(v) for name, v in s.items()} for k, s in samples.items()}


def report(m: dict[int, dict[str, float]], args) -> str:
    first = m[min(m)]
    rows = [f"| {k} | {r['eps']:.2f} | {r['tps']:.1f} | {r['eps'] / first['eps']:.2f}× | {r['share']:.2f} |"
            for k, r in sorted(m.items())]
    cores = ("each server bound to its own 1/N of the cores (k servers use k slices: the scale-out comparison)"
             if args.split_cores else "every server bound to all cores (k servers compete for them)")
    return "\n".join([
        "## Generation over N local servers (`bench/micro/servers.py`)", "",
        f"{args.episodes} `{args.env}` episodes per run through one `pool:` policy over the first k `vllm serve` "
        f"servers (`selfevolve engine start`, model {args.model}), greedy, ≤{args.max_tokens} new tokens per "
        f"solve/reflect; {cores}. Median of {args.repeats} repeats, counts alternating.", "",
        "| servers | episodes/s | completion tokens/s | vs 1 server | busiest server's share of requests |",
        "|---|---|---|---|---|", *rows, "",
        f"This machine has {len(os.sched_getaffinity(0))} cores, and the episode graph and the pool's client run "
        "on them too: " + ("more servers bring more cores here, but memory bandwidth and the client are shared."
                           if args.split_cores else "the servers share the same cores, so the ratio measures the "
                           "pool's spreading and overhead, not more compute."),
    ]) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", default="1,2", help="comma-separated server counts to compare")
    ap.add_argument("--model", default="default", help="base model: default (embedded) or a local HF dir")
    ap.add_argument("--env", default="arithmetic")
    ap.add_argument("--episodes", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--split-cores", action="store_true", help="bind each server to its own slice of the cores")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the servers to answer")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    counts = [int(k) for k in args.servers.split(",") if k.strip()]
    if not counts or min(counts) < 1:
        raise SystemExit(f"--servers must list counts >= 1, got {args.servers!r}")
    with tempfile.TemporaryDirectory(prefix="bench-servers-") as tmp:
        servers = start_servers(max(counts), args.model, Path(tmp), args.split_cores, args.timeout)
        try:
            body = report(measure(args, [url for _, url in servers]), args)
        finally:
            stop_servers(servers)
    print(body)
    if not args.no_write:
        from bench._report import write_section

        cmd = "python -m bench.micro.servers " + " ".join(
            f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in vars(args).items()
            if k not in ("no_write", "timeout") and v is not False)
        print("wrote", write_section("servers", body, cmd))


if __name__ == "__main__":
    main()
