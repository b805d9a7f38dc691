"""Episodes/s of collection: the in-process runner vs Ray workers (1 and 2), side by side in one run.

    python -m bench.micro.scale --episodes 32                      # embedded model, arithmetic; writes docs/benchmarks.md
    python -m bench.micro.scale --model python:tests.daemon_scripted:policy --episodes 8 --repeats 1 --no-write  # smoke

What is compared (one process, one local Ray cluster, every configuration loaded once and kept warm;
each repeat runs every configuration, in an order that rotates between repeats, because this box is shared):
- ``in-process``: :func:`agent.runner.run_episodes`, ``--concurrency`` episodes in flight through one policy
  (its micro-batcher merges their calls); torch uses every core of the machine.
- ``ray, N workers``: :func:`agent.scale.driver.collect_on_ray` on N actors, each with its own copy of the
  model and ``--worker-cpus`` CPUs (Ray sets OMP_NUM_THREADS to it), ``ceil(concurrency / N)`` episodes each.
Every configuration runs the same tasks, greedy (so the same answers), with no library: nothing recorded,
no retrieval, so the rows measure generation + graph + transport, not the experience library.

Other code adds rows by passing more :class:`Setup` objects (one row each) to :func:`measure` and :func:`report`,
e.g. a policy over two local servers: ``InProcess("2 servers", "openai:...", config, concurrency)``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from agent.graph import EpisodeConfig, GraphDeps
from agent.runner import RunSummary, run_episodes
from environments import Environment, Task, get_environment


class Setup(Protocol):
    """One configuration (one row): ``open`` loads it (timed as setup), ``run`` collects, ``close`` frees it."""

    name: str

    def open(self) -> None: ...

    async def run(self, tasks: list[Task]) -> RunSummary: ...

    async def close(self) -> None: ...


@dataclass
class InProcess:
    """:func:`agent.runner.run_episodes` through one policy in this process."""

    name: str
    model: str
    env: Environment
    config: EpisodeConfig
    concurrency: int
    deps: GraphDeps | None = None

    def open(self) -> None:
        from agent.policy import load_policy

        self.deps = GraphDeps(load_policy(self.model), self.env, self.config)

    async def run(self, tasks: list[Task]) -> RunSummary:
        return (await run_episodes(tasks, self.deps, concurrency=self.concurrency))[1]

    async def close(self) -> None:
        if self.deps is not None:
            await self.deps.policy.aclose()


@dataclass
class OnRay:
    """:func:`agent.scale.driver.collect_on_ray` on ``workers`` actors (needs a connected Ray)."""

    name: str
    model: str
    env: Environment
    config: EpisodeConfig
    concurrency: int
    workers: int
    worker_cpus: float = 1.0
    pool: object | None = None

    def open(self) -> None:
        from agent.scale.jobs import WorkerSpec
        from agent.scale.pool import WorkerPool

        per = -(-self.concurrency // self.workers)
        self.pool = WorkerPool(WorkerSpec(self.model, concurrency=per, num_cpus=self.worker_cpus), self.workers).start()

    async def run(self, tasks: list[Task]) -> RunSummary:
        from agent.scale.driver import collect_on_ray

        return (await collect_on_ray(self.pool, [(self.env, tasks)], self.config))[1]

    async def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


@dataclass
class Row:
    """One configuration's medians over the repeats."""

    name: str
    episodes_per_s: float
    completion_tokens_per_s: float
    final_accuracy: float
    setup_s: float
    samples: list[float] = field(default_factory=list)  # episodes/s per repeat
    errors: int = 0


def measure(setups: Sequence[Setup], tasks: list[Task], repeats: int, warmup: int = 2) -> list[Row]:
    """Open every setup (timed, with a ``warmup``-episode run), then ``repeats`` rounds, order rotating;
    every setup is closed at the end."""
    return asyncio.run(_measure(setups, tasks, repeats, warmup))


async def _measure(setups: Sequence[Setup], tasks: list[Task], repeats: int, warmup: int) -> list[Row]:
    loads: dict[str, float] = {}
    runs: dict[str, list[RunSummary]] = {s.name: [] for s in setups}
    try:
        for s in setups:
            start = time.perf_counter()
            s.open()
            await s.run(tasks[:warmup])
            loads[s.name] = time.perf_counter() - start
        for r in range(repeats):
            for s in list(setups[r % len(setups):]) + list(setups[: r % len(setups)]):
                summary = await s.run(tasks)
                runs[s.name].append(summary)
                print(f"repeat {r} {s.name}: {summary.episodes} episodes in {summary.seconds:.1f} s "
                      f"({summary.episodes_per_second:.2f}/s), {len(summary.errors)} errors", flush=True)
    finally:
        for s in setups:
            await s.close()
    return [Row(name, statistics.median(x.episodes_per_second for x in rs),
                statistics.median(x.completion_tokens_per_second for x in rs),
                statistics.median(x.final_accuracy for x in rs), loads[name],
                [x.episodes_per_second for x in rs], sum(len(x.errors) for x in rs))
            for name, rs in runs.items()]


def report(rows: list[Row], args: argparse.Namespace) -> str:
    """The markdown section: one row per configuration, relative to the first row."""
    base = rows[0].episodes_per_s or 1.0
    lines = [
        "## Collection: in-process vs Ray workers (`bench/micro/scale.py`)", "",
        f"{args.episodes} `{args.env}` episodes per run, model `{args.model}`, greedy, max 2 attempts, "
        f"≤{args.max_tokens} new tokens per solve/reflect; {args.concurrency} episodes in flight in every "
        f"configuration; no library (nothing recorded, no retrieval). Median of {args.repeats} repeats, "
        f"configurations alternating; setup = model load or workers start, plus a {args.warmup}-episode warm-up.", "",
        "| configuration | episodes/s | completion tokens/s | vs first row | final accuracy | setup s | episodes/s per repeat |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per = ", ".join(f"{x:.2f}" for x in r.samples)
        lines.append(f"| {r.name} | {r.episodes_per_s:.2f} | {r.completion_tokens_per_s:.1f} | "
                     f"{r.episodes_per_s / base:.2f}× | {r.final_accuracy:.2f} | {r.setup_s:.1f} | {per} |")
    if any(r.errors for r in rows):
        lines += ["", "Episode errors: " + ", ".join(f"{r.name} {r.errors}" for r in rows if r.errors)]
    return "\n".join(lines) + "\n"


def setups_for(args: argparse.Namespace, env: Environment, config: EpisodeConfig) -> list[Setup]:
    """The default rows: in-process, then Ray with each of ``--ray-workers`` (e.g. 1,2)."""
    rows: list[Setup] = [InProcess("in-process", args.model, env, config, args.concurrency)]
    for n in args.ray_workers:
        rows.append(OnRay(f"ray, {n} worker{'s' if n > 1 else ''}", args.model, env, config, args.concurrency, n,
                          args.worker_cpus))
    return rows


def run_bench(args: argparse.Namespace) -> list[Row]:
    """Connect (or start the local cluster sized for every pool at once), measure, close everything."""
    from agent.scale.cluster import connected

    env = get_environment(args.env)
    tasks = env.sample(args.episodes, seed=args.seed)
    config = EpisodeConfig(retrieval=False, record=False, temperature=0.0, solve_tokens=args.max_tokens,
                           reflect_tokens=args.max_tokens, critique_tokens=32)
    setups = setups_for(args, env, config)
    cpus = int(sum(n * args.worker_cpus for n in args.ray_workers) + 0.999)
    with connected(args.ray, workers=cpus):
        return measure(setups, tasks, args.repeats, args.warmup)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="Model spec every configuration loads (default: embedded).")
    ap.add_argument("--env", default="arithmetic")
    ap.add_argument("--episodes", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=16, help="Episodes in flight, in every configuration.")
    ap.add_argument("--ray-workers", type=lambda s: [int(x) for x in s.split(",") if x], default=[1, 2],
                    help="Comma-separated worker counts, one row each (default 1,2).")
    ap.add_argument("--worker-cpus", type=float, default=1.0, help="CPUs (torch threads) per Ray worker.")
    ap.add_argument("--ray", default="local", help="local | auto | HOST:PORT | ray://HOST:10001")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if args.episodes < 1 or args.concurrency < 1 or args.repeats < 1 or any(n < 1 for n in args.ray_workers):
        ap.error("--episodes, --concurrency, --repeats and every --ray-workers count must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    body = report(run_bench(args), args)
    print(body)
    if not args.no_write:
        from bench._report import write_section

        workers = ",".join(str(n) for n in args.ray_workers)
        cmd = (f"python -m bench.micro.scale --model {args.model} --env {args.env} --episodes {args.episodes} "
               f"--concurrency {args.concurrency} --ray-workers {workers} --worker-cpus {args.worker_cpus:g} "
               f"--max-tokens {args.max_tokens} --repeats {args.repeats} --warmup {args.warmup} --seed {args.seed}")
        print("wrote", write_section("scale", body, cmd))


if __name__ == "__main__":
    main()
