"""Before/after: the answer instruction with a concrete example value ("e.g. <answer>42</answer>") vs without.

    python -m bench.experiments.reflection planted --out runs/reflection -n 160

The same held-out tasks get one greedy and one sampled (temperature 0.7) first attempt under each
instruction; every output is scored twice, leniently (any final number) and strictly (only inside
``<answer>`` tags), by the environment's own verifiers. Paired per task; exact McNemar on the discordant
pairs. ``copied`` counts answers equal to the example value the old instruction planted.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

from agent.evaluate import unique_eval_tasks
from agent.policy import SamplingParams, load_policy
from environments import Task, get_environment

# What the instructions said before (commit b5ac633) and the value each one planted.
OLD = {
    "arithmetic": ("Give the final number inside <answer></answer> tags, e.g. <answer>42</answer>.", "42"),
    "countdown": ("Use + - * / and parentheses; each given number at most once. Give only the expression inside "
                  "<answer></answer> tags, e.g. <answer>(1 + 2) * 3</answer>.", "(1 + 2) * 3"),
}
DEFAULT_SPECS = ("arithmetic:digits=2", "countdown:min_numbers=2,max_numbers=2,max_number=20")


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (b: only new right, c: only old right).

    >>> round(mcnemar_exact(10, 2), 4), mcnemar_exact(0, 0)
    (0.0386, 1.0)
    """
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(0, min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def with_old_instruction(task: Task, old: str, new: str) -> list[dict[str, str]]:
    msgs = task.messages()
    last = msgs[-1]
    if not last["content"].endswith(new):
        raise ValueError(f"task {task.id} does not end with the current instruction {new!r}")
    msgs[-1] = {**last, "content": last["content"][: len(last["content"]) - len(new)] + old}
    return msgs


async def measure(model: str, specs: list[str], n: int, seed: int) -> list[dict]:
    policy = load_policy(model)
    rows = []
    try:
        for spec in specs:
            env = get_environment(spec)
            base = env.name
            if base not in OLD:
                raise ValueError(f"no recorded old instruction for {base!r}; known: {', '.join(OLD)}")
            old, planted = OLD[base]
            sep = "," if ":" in spec else ":"
            strict = get_environment(f"{spec}{sep}answer_format=strict") if base == "arithmetic" else env
            tasks = unique_eval_tasks(env, n, seed=seed)
            for temperature in (0.0, 0.7):
                params = SamplingParams(max_tokens=128, temperature=temperature, top_p=0.95)
                chats = {"before": [with_old_instruction(t, old, env.answer_instruction) for t in tasks],
                         "after": [t.messages() for t in tasks]}
                outs = {k: await policy.generate(v, params) for k, v in chats.items()}
                for arm, completions in outs.items():
                    for t, c in zip(tasks, completions, strict=True):
                        lenient, tight = env.verify(t, c.text), strict.verify(t, c.text)
                        rows.append({"spec": spec, "temperature": temperature, "arm": arm, "task": t.id,
                                     "lenient": lenient.success, "strict": tight.success,
                                     "copied": (lenient.answer or "").strip() == planted, "output": c.text})
    finally:
        await policy.aclose()
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    out = []
    keys = sorted({(r["spec"], r["temperature"]) for r in rows})
    for spec, temp in keys:
        by = {(r["arm"], r["task"]): r for r in rows if r["spec"] == spec and r["temperature"] == temp}
        task_ids = sorted({t for _, t in by})
        row = {"spec": spec, "temperature": temp, "n": len(task_ids)}
        for metric in ("lenient", "strict", "copied"):
            before = [by[("before", t)][metric] for t in task_ids]
            after = [by[("after", t)][metric] for t in task_ids]
            b = sum(a and not o for a, o in zip(after, before, strict=True))
            c = sum(o and not a for a, o in zip(after, before, strict=True))
            row[metric] = {"before": sum(before) / len(task_ids), "after": sum(after) / len(task_ids),
                           "only_after": b, "only_before": c, "p": mcnemar_exact(b, c)}
        out.append(row)
    return out


def main(model: str, specs: list[str], n: int, seed: int, out: Path) -> Path:
    rows = asyncio.run(measure(model, specs, n, seed))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "planted.json"
    path.write_text(json.dumps({"model": model, "n": n, "seed": seed, "rows": rows, "summary": summarize(rows)}, indent=1))
    return path
