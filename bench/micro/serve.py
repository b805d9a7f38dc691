"""Requests/s and latency of ``selfevolve serve`` vs calling the same engine in-process.

Question: what does the HTTP layer (uvicorn, JSON, validation, the registry check, keeping every
completion in served.db, the version gate) cost next to ``await policy.generate`` on the same model?
Target: >= 0.9x the in-process requests/s at 32 concurrent clients.

Method: C clients each send R requests one after another (greedy, ``--max-tokens``, a different
arithmetic prompt each, the same prompts on both sides). "direct": C asyncio tasks calling the engine
(``load_policy(model)``, the server's micro-batcher settings) in this process. "server": a real
``selfevolve serve`` subprocess on 127.0.0.1 (its own copy of the model), the C clients in this
process over HTTP (httpx; the openai client adds only client-side time). Both sides share the two
cores with the clients, as a real deployment on one host would. Sides alternate within each repeat
and the order flips every repeat; we report the median requests/s over repeats and p50/p95 latency
over every request of a side.

    python -m bench.micro.serve                                     # embedded model, 1/8/32 clients
    python -m bench.micro.serve --threads 1,2 --repeats 3           # both torch-thread settings, one after the other
    python -m bench.micro.serve --model hf:/tmp/tiny --clients 1,8 --repeats 1 --no-write
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from agent.policy import SamplingParams, load_policy

COMMAND = "python -m bench.micro.serve"


def prompts(count: int) -> list[list[dict[str, str]]]:
    from environments import get_environment

    return [t.messages() for t in get_environment("arithmetic").sample(count, split="train", seed=3)]


def requests_per_client(clients: int, base: int) -> int:
    """Enough requests that every level runs at least two full rounds of batches."""
    return max(base, 2) if clients > 1 else max(base, 4)


async def _clients(call, chats, clients: int, per_client: int) -> tuple[float, list[float]]:
    latencies: list[float] = []

    async def client(i: int) -> None:
        for j in range(per_client):
            chat = chats[(i * per_client + j) % len(chats)]
            t0 = time.perf_counter()
            await call(chat)
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return time.perf_counter() - start, latencies


async def run_direct(policy, chats, clients: int, per_client: int, max_tokens: int) -> tuple[float, list[float]]:
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    return await _clients(lambda chat: policy.generate([chat], params), chats, clients, per_client)


async def run_server(url: str, chats, clients: int, per_client: int, max_tokens: int) -> tuple[float, list[float]]:
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
        async def call(chat):
            res = await http.post("/v1/chat/completions", json={
                "model": "selfevolve", "messages": chat, "temperature": 0, "max_tokens": max_tokens})
            res.raise_for_status()

        return await _clients(call, chats, clients, per_client)


def start_server(model: str, workspace: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("SELFEVOLVE_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "serve", "-w", str(workspace), "--model", model,
                             "--port", str(port), "--log-level", "warning"], env=env, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"selfevolve serve did not start (exit {proc.poll()})")
        time.sleep(0.3)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def batch_counts(side: str, policy, url: str) -> tuple[int, int]:
    """(batches, items) the side's micro-batcher has run so far (the server reports its own in /api/summary)."""
    if side == "direct":
        return policy.batcher.stats.batches, policy.batcher.stats.items
    async with httpx.AsyncClient(timeout=60) as http:
        b = (await http.get(url + "/api/summary")).json()["server"]["batches"]
    return b["batches"], b["items"]


async def measure(args, policy, url: str) -> list[dict]:
    chats = prompts(256)
    for side in (lambda: run_direct(policy, chats, 1, 1, args.max_tokens), lambda: run_server(url, chats, 1, 1, args.max_tokens)):
        await side()  # warm-up: first-call costs (threads, connections, caches) out of the timings
    rows = []
    for clients in args.clients:
        per = requests_per_client(clients, args.requests)
        rps: dict[str, list[float]] = {"direct": [], "server": []}
        lat: dict[str, list[float]] = {"direct": [], "server": []}
        merged = {"direct": [0, 0], "server": [0, 0]}  # batches, items
        for rep in range(args.repeats):
            order = ["direct", "server"] if rep % 2 == 0 else ["server", "direct"]
            for side in order:
                run = run_direct(policy, chats, clients, per, args.max_tokens) if side == "direct" else \
                    run_server(url, chats, clients, per, args.max_tokens)
                before = await batch_counts(side, policy, url)
                wall, latencies = await run
                after = await batch_counts(side, policy, url)
                merged[side] = [merged[side][0] + after[0] - before[0], merged[side][1] + after[1] - before[1]]
                rps[side].append(clients * per / wall)
                lat[side].extend(latencies)
                print(f"clients={clients} repeat={rep} {side}: {clients * per / wall:.2f} req/s "
                      f"p50={pct(latencies, .5):.2f}s", file=sys.stderr, flush=True)
        rows.append({"clients": clients, "requests": clients * per, **{
            f"{s}_{k}": v for s in ("direct", "server") for k, v in (
                ("rps", statistics.median(rps[s])), ("p50", pct(lat[s], .5)), ("p95", pct(lat[s], .95)))},
            **{f"{s}_batch": merged[s][1] / max(merged[s][0], 1) for s in merged},
            "ratio": statistics.median(rps["server"]) / statistics.median(rps["direct"]),
            "pair_ratios": [a / b for a, b in zip(rps["server"], rps["direct"], strict=True)]})
    return rows


def table(rows: list[dict], args) -> str:
    lines = [
        "## Serving: `selfevolve serve` over HTTP vs the engine in-process (`bench/micro/serve.py`)\n",
        f"Model `{args.model}`, greedy, ≤{args.max_tokens} new tokens, arithmetic prompts; each client sends its requests "
        f"one after another; median requests/s of {args.repeats} alternating repeats, latency percentiles over every "
        "request. Target: server ≥ 0.9× direct at 32 clients.\n",
        "| torch threads | clients | requests | direct req/s | server req/s | server/direct | per repeat (min–max) "
        "| direct p50 / p95 (s) | server p50 / p95 (s) | mean batch direct / server |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        mark = (" ✅" if r["ratio"] >= 0.9 else " ❌") if r["clients"] == 32 else ""
        lines.append(f"| {r['threads']} | {r['clients']} | {r['requests']} | {r['direct_rps']:.2f} | {r['server_rps']:.2f} | "
                     f"**{r['ratio']:.2f}×**{mark} | {min(r['pair_ratios']):.2f}–{max(r['pair_ratios']):.2f} | "
                     f"{r['direct_p50']:.2f} / {r['direct_p95']:.2f} | "
                     f"{r['server_p50']:.2f} / {r['server_p95']:.2f} | {r['direct_batch']:.1f} / {r['server_batch']:.1f} |")
    lines.append("\nBoth sides batch through the same micro-batcher settings (window 5 ms, ≤32 per batch); the server "
                 "also keeps every completion in served.db and reads the serving version from SQLite per request. The "
                 "per-repeat ratios show how much of the spread is the shared machine's noise; on an oversubscribed CPU "
                 "use one torch thread per side (docs/serve.md, 'Options').")
    return "\n".join(lines)


def run_setting(args, threads: int) -> list[dict]:
    """Both sides at ``threads`` torch threads: a fresh engine here (its generate thread is created under
    the setting) and a server started with ``$SELFEVOLVE_THREADS`` set to it."""
    os.environ["SELFEVOLVE_THREADS"] = str(threads)
    policy = load_policy(args.model, window_ms=5.0, max_batch_size=32)  # the server's batcher settings
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        proc = start_server(args.model, Path(tmp) / "ws", args.port)
        try:
            rows = asyncio.run(measure(args, policy, f"http://127.0.0.1:{args.port}"))
        finally:
            proc.terminate()
            proc.wait(timeout=60)
            asyncio.run(policy.aclose())
    return [{**r, "threads": threads} for r in rows]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default")
    p.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32])
    p.add_argument("--requests", type=int, default=2, help="Requests per client (at least 2; 4 for one client).")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--threads", type=lambda s: [int(x) for x in s.split(",")], default=[0],
                   help="torch threads of both sides, one setting after another ($SELFEVOLVE_THREADS; 0 = all cores).")
    p.add_argument("--no-write", action="store_true", help="Print the table; leave docs/benchmarks.md alone.")
    args = p.parse_args(argv)
    rows = [row for threads in args.threads for row in run_setting(args, threads or os.cpu_count() or 1)]
    body = table(rows, args)
    print(body)
    if not args.no_write:
        from bench._report import write_section

        command = COMMAND + " " + " ".join(a for a in (argv if argv is not None else sys.argv[1:]))
        print(f"wrote {write_section('serve', body, command.strip())}")


if __name__ == "__main__":
    main()
