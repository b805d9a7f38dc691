"""Where is an env's boundary band? First-try accuracy of the model on held-out tasks at several settings.

    python -m bench.experiments.reflection bands --specs arithmetic:digits=2 "countdown:max_numbers=3" -n 64

Sampled like the study's first attempts (temperature 0.7, no hints); greedy too with ``--greedy``.
"""

from __future__ import annotations

import asyncio
import time

from rich.console import Console
from rich.table import Table

from agent.evaluate import unique_eval_tasks
from agent.policy import SamplingParams, load_policy
from environments import get_environment
from trainer.gate import wilson


async def measure(model: str, specs: list[str], n: int, tokens: int, greedy: bool) -> list[dict]:
    envs = {spec: get_environment(spec) for spec in specs}  # every spec checked before the model loads
    policy = load_policy(model)
    rows = []
    try:
        for spec, env in envs.items():
            tasks = unique_eval_tasks(env, n, seed=7)
            for temperature in ([0.0] if greedy else []) + [0.7]:
                t0 = time.perf_counter()
                outs = await policy.generate([t.messages() for t in tasks],
                                             SamplingParams(max_tokens=tokens, temperature=temperature, top_p=0.95))
                ok = [env.verify(t, c.text).success for t, c in zip(tasks, outs, strict=True)]
                lo, hi = wilson(sum(ok), len(ok))
                rows.append({"spec": spec, "temperature": temperature, "n": len(ok), "accuracy": sum(ok) / len(ok),
                             "ci": [lo, hi], "mean_tokens": sum(c.completion_tokens for c in outs) / len(outs),
                             "seconds": time.perf_counter() - t0})
                print(f"{spec} T={temperature}: {sum(ok)}/{len(ok)} right, {rows[-1]['mean_tokens']:.0f} tokens, "
                      f"{rows[-1]['seconds']:.0f} s", flush=True)
    finally:
        await policy.aclose()
    return rows


def main(model: str, specs: list[str], n: int, tokens: int, greedy: bool) -> list[dict]:
    rows = asyncio.run(measure(model, specs, n, tokens, greedy))
    table = Table(title=f"first-try accuracy on held-out tasks ({model})")
    for col in ("env", "T", "n", "accuracy (95% CI)", "mean tokens", "s"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["spec"], f"{r['temperature']:.1f}", str(r["n"]),
                      f"{r['accuracy']:.1%} [{r['ci'][0]:.0%}, {r['ci'][1]:.0%}]", f"{r['mean_tokens']:.0f}",
                      f"{r['seconds']:.0f}")
    Console().print(table)
    return rows
