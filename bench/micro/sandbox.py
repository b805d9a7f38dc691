"""What the sandbox costs per verification, layer by layer, measured side by side.

    python -m bench.micro.sandbox            # ~2 min; rewrites its section of docs/benchmarks.md
    python -m bench.micro.sandbox -n 20 --no-write

Configurations run interleaved (one of each per round, so machine noise hits all alike):
``interpreter`` (``python -I -S -c pass``: the floor of any process-per-check design), ``sandbox bare``
(our child without namespaces or the audit hook), ``sandbox full`` (every layer), ``python_code verify``
(the environment's whole check: extraction, 8 hidden tests in the full sandbox, judging), and for
reasoning-gym the scorer in-process (what it cost before, unsafe) against the sandboxed worker (one
fork per answer).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from environments import get_environment
from environments.sandbox import SandboxLimits, call_function, isolation

CODE = "def add(a, b):\n    return a + b"


def configs() -> dict[str, Callable[[], object]]:
    bare = SandboxLimits(namespaces=False, audit_hook=False)
    full = SandboxLimits()
    env = get_environment("python_code:min_level=1,max_level=1")
    task = next(t for t in env.sample(200) if t.reference["entry"] == "add")
    rg = get_environment("reasoning_gym:spiral_matrix")
    rg_task = rg.sample(1)[0]
    entry = rg.dataset[rg_task.reference["index"]]
    answer = f"<answer>{rg_task.reference['answer']}</answer>"
    rg.verify(rg_task, answer)  # start the worker outside the timings
    return {
        "interpreter (python -I -S -c pass)": lambda: subprocess.run([sys.executable, "-I", "-S", "-c", "pass"], check=True),
        "sandbox bare (no namespaces, no hook)": lambda: call_function(CODE, "add", [[1, 2]], bare),
        "sandbox full (every layer)": lambda: call_function(CODE, "add", [[1, 2]], full),
        "python_code verify (8 tests, full)": lambda: env.verify(task, f"<answer>{CODE}</answer>"),
        "reasoning_gym score_answer in-process (unsafe, before)": lambda: rg.dataset.score_answer(rg_task.reference["answer"], entry),
        "reasoning_gym verify via sandboxed worker": lambda: rg.verify(rg_task, answer),
    }


def measure(n: int) -> dict[str, list[float]]:
    runs = configs()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(n):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1000)
        print(f"\rround {i + 1}/{n}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return times


def table(times: dict[str, list[float]]) -> str:
    rows = ["| configuration | p50 ms | p95 ms |", "|---|---:|---:|"]
    for name, ms in times.items():
        ms = sorted(ms)
        p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
        rows.append(f"| {name} | {statistics.median(ms):.3g} | {p95:.3g} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=40, help="rounds (each runs every configuration once)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    times = measure(args.n)
    body = (f"## Sandbox cost per verification (`bench/micro/sandbox.py`)\n\n{args.n} rounds, interleaved. "
            f"Layers on this machine: {', '.join(isolation())}.\n\n{table(times)}")
    print(body)
    if not args.no_write:
        from bench._report import write_section

        print(write_section("sandbox", body, f"python -m bench.micro.sandbox -n {args.n}"))


if __name__ == "__main__":
    main()
