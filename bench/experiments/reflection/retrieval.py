"""Memory retrieval measured: first-try accuracy with and without hints from past successes, no weight update.

    python -m bench.experiments.reflection retrieval --out runs/reflection -n 160

Everything runs through the episode graph itself (``agent.runner.run_episodes``; one attempt, no critique),
so what is measured is what ``selfevolve run`` does with ``--retrieval`` on and off.

1. A library is filled by the base model's own sampled attempts at ``train`` train-split tasks.
2. The same ``n`` held-out tasks are attempted greedily (and once at temperature 0.7) with retrieval off and
   on; paired per task, exact McNemar.
3. The strict bootstrap (``arithmetic:...,answer_format=strict``): the 135M model never writes the tags, so
   a strict library holds no success to retrieve. Its failures whose number was right are repaired by the
   environment's ``reformat`` hook (the number put into the tags, re-verified) and recorded in a second
   library as seed examples; strict first-try accuracy is then measured with no retrieval, retrieval from
   the (empty) strict successes, and retrieval from the repaired seeds.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from agent.evaluate import unique_eval_tasks
from agent.graph import EpisodeConfig, GraphDeps
from agent.policy import Policy, load_policy
from agent.runner import run_episodes
from environments import Environment, get_environment
from memory import ExperienceLibrary
from memory.records import Episode

from .planted import mcnemar_exact

DEFAULT_SPEC = "arithmetic:digits=2"


async def _attempts(policy: Policy, env: Environment, tasks: list, lib: ExperienceLibrary | None, *,
                    retrieval: bool, temperature: float, record: bool) -> list[Episode]:
    cfg = EpisodeConfig(max_attempts=1, critique=False, retrieval=retrieval and lib is not None, k=2,
                        temperature=temperature, record=record)
    episodes, summary = await run_episodes(tasks, GraphDeps(policy, env, cfg, lib), concurrency=64)
    if summary.errors:
        raise RuntimeError(f"{len(summary.errors)} episode(s) failed: {summary.errors[0].error}")
    return episodes


def repaired(episodes: list[Episode], env: Environment) -> list[Episode]:
    """Failed attempts whose answer was right but malformed, reformatted by the env and re-verified."""
    out = []
    for ep in episodes:
        first = ep.attempts[0]
        fixed = None if first.feedback.success else env.reformat(ep.task, first.solve.output)
        if fixed is None:
            continue
        fb = env.verify(ep.task, fixed)
        if fb.success:
            attempt = first.model_copy(update={"solve": first.solve.model_copy(update={"output": fixed}),
                                               "feedback": fb, "answer": fb.answer})
            out.append(ep.model_copy(update={"id": ep.id + "-repaired", "attempts": [attempt],
                                             "metadata": {**ep.metadata, "seeded_by": "reformat"}}))
    return out


def _paired(name: str, a: list[Episode], b: list[Episode], temperature: float) -> dict:
    """``b`` (the treatment) against ``a`` (no retrieval), task by task."""
    ok_a = {e.task.id: e.first_success for e in a}
    ok_b = {e.task.id: e.first_success for e in b}
    hints = [len(e.retrieved_ids) for e in b]
    ids = sorted(ok_a.keys() & ok_b.keys())
    only_b = sum(ok_b[t] and not ok_a[t] for t in ids)
    only_a = sum(ok_a[t] and not ok_b[t] for t in ids)
    return {"comparison": name, "temperature": temperature, "n": len(ids),
            "without": sum(ok_a[t] for t in ids) / len(ids), "with": sum(ok_b[t] for t in ids) / len(ids),
            "only_with": only_b, "only_without": only_a, "p": mcnemar_exact(only_b, only_a),
            "hinted_share": sum(h > 0 for h in hints) / max(len(hints), 1), "hints_mean": sum(hints) / max(len(hints), 1)}


async def measure(model: str, spec: str, n: int, train: int, out: Path, seed: int) -> dict:
    env = get_environment(spec)
    strict = get_environment(f"{spec}{',' if ':' in spec else ':'}answer_format=strict")
    policy = load_policy(model)
    libs = {name: ExperienceLibrary(out / f"retrieval-{name}") for name in ("lenient", "strict", "seeded")}
    rows = []
    try:
        if libs["lenient"].count() == 0:
            collected = await _attempts(policy, env, env.sample(train, "train", seed), libs["lenient"],
                                        retrieval=False, temperature=0.7, record=True)
            # the same outputs judged strictly (the prompt is the same; only the verdict differs)
            strict_eps = [e.model_copy(update={"env": strict.spec, "task": e.task.model_copy(update={"env": strict.spec}),
                          "attempts": [a.model_copy(update={"feedback": strict.verify(e.task, a.solve.output)})
                                       for a in e.attempts]}) for e in collected]
            libs["strict"].record_many(strict_eps)
            libs["seeded"].record_many(strict_eps + repaired(strict_eps, strict))
        tasks = unique_eval_tasks(env, n, seed=seed)
        strict_tasks = [t.model_copy(update={"env": strict.spec}) for t in tasks]
        for temperature in (0.0, 0.7):
            off = await _attempts(policy, env, tasks, None, retrieval=False, temperature=temperature, record=False)
            on = await _attempts(policy, env, tasks, libs["lenient"], retrieval=True, temperature=temperature, record=False)
            rows.append({"env": spec, **_paired("retrieval of past successes", off, on, temperature)})
            s_off = await _attempts(policy, strict, strict_tasks, None, retrieval=False, temperature=temperature, record=False)
            for name in ("strict", "seeded"):
                s_on = await _attempts(policy, strict, strict_tasks, libs[name], retrieval=True, temperature=temperature,
                                       record=False)
                label = "strict successes only" if name == "strict" else "format-repaired seeds"
                rows.append({"env": strict.spec, **_paired(f"retrieval of {label}", s_off, s_on, temperature)})
        library = {name: {"episodes": lib.count(), "successes": lib.count(success=True)} for name, lib in libs.items()}
    finally:
        for lib in libs.values():
            lib.close()
        await policy.aclose()
    return {"model": model, "spec": spec, "n": n, "train": train, "seed": seed, "library": library, "rows": rows}


def main(model: str, spec: str, n: int, train: int, out: Path, seed: int = 7) -> Path:
    result = asyncio.run(measure(model, spec, n, train, out, seed))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "retrieval.json"
    path.write_text(json.dumps(result, indent=1))
    return path
