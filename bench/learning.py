"""Does the agent improve itself? Accuracy of every trained version vs the compute spent, per method.

    python -m bench.learning --quick                 # smoke check: 1 round per method, tiny numbers (minutes)
    python -m bench.learning                         # the experiment (≤ 2 CPU-hours on 2 cores; see docs/learning.md)
    python -m bench.learning --methods grpo-reflection,memory --rounds 2 --resume

Design decisions
- One fresh workspace per method (``<workspace>/<method>/``: its own experience library and registry),
  so methods never see each other's episodes. Each round: collect ``--episodes-per-round`` episodes on
  the *train* split of ``--train-env`` (sampled at temperature 0.7, reflect+retry on, critique off)
  → train ``--steps-per-round`` optimizer steps with the method on that method's memory → promote
  the new version unconditionally (the curve shows the method's trajectory; the promotion gate is a
  separate decision) → evaluate it. The next round collects with the new version and, for GRPO, trains
  on from its adapter (``trainer.train`` continues the served parent's adapter; SFT restarts from the base).
- ``memory`` is retrieval only: no weight updates; collection and evaluation run with memory hints on
  (the k most similar past *train-split* successes). Held-out eval episodes are never recorded, so no
  eval answer becomes a hint. Every other method is evaluated without hints, as ``agent.evaluate`` does.
- Every version is evaluated on the SAME held-out tasks of every env (``unique_eval_tasks``), greedy,
  max 2 attempts: first-try and final accuracy with 95% Wilson CIs and the per-task outcomes, so two
  versions are paired task by task. The base is evaluated once and shared (an empty memory gives no hints).
- Compute = wall seconds of collection + training (evaluation is measurement and is not counted);
  tokens = prompt + completion tokens of the collected episodes (training-time generation not counted;
  the training steps are recorded separately). The budget stops a method's rounds once its compute
  reaches ``--budget-minutes``.
- Resumable: ``results.json`` is rewritten atomically after every round and every base eval; ``--resume``
  skips what it holds. An interrupted round is redone: its episodes already in memory (run id
  ``round-N``) are kept and only the rest collected.
- ``docs/learning.md`` and ``docs/img/learning_*.png`` are regenerated from the results file alone
  (``--report-only``), including the "What did not improve" section, computed from the numbers with an
  exact one-sided McNemar test on the paired outcomes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "learning.md"
METHODS = ("grpo-reflection", "grpo", "sft", "memory")
DEFAULT_ENVS = ("arithmetic:answer_format=strict", "arithmetic", "countdown")
DEFAULT_TRAIN_ENV = "arithmetic"  # lenient: the 135M boundary band (~46%); strict is ~0%, a 0/1 reward there is all zeros
FULL = dict(rounds=2, episodes_per_round=32, steps_per_round=4, eval_n=32, max_tokens=48, budget_minutes=15.0)
QUICK = dict(rounds=1, episodes_per_round=8, steps_per_round=1, eval_n=8, max_tokens=48, budget_minutes=10.0)
SEED = 0
EVAL_SEED = 1234


# --------------------------------------------------------------------------- results file (pure)
def new_results(settings: dict[str, Any]) -> dict[str, Any]:
    return {"settings": settings, "base": {}, "methods": {}}


def load_results(path: Path, settings: dict[str, Any], resume: bool) -> dict[str, Any]:
    """The results file to continue (``resume``), else a fresh one. Refuses to mix different settings."""
    if not resume or not path.exists():
        return new_results(settings)
    results = json.loads(path.read_text())
    old = {k: v for k, v in results.get("settings", {}).items() if k in MEASUREMENT_KEYS}
    new = {k: v for k, v in settings.items() if k in MEASUREMENT_KEYS}
    if old != new:
        diff = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
        raise SystemExit(f"{path} was made with other settings ({diff}): use another --workspace or drop --resume")
    results["settings"] = {**results.get("settings", {}), **settings}
    return results


# Settings that change what a number means; budget/rounds/methods may grow on resume.
MEASUREMENT_KEYS = ("model", "envs", "train_env", "episodes_per_round", "steps_per_round", "eval_n", "max_tokens")


def save_results(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, path)


def rounds_of(results: dict[str, Any], method: str) -> list[dict[str, Any]]:
    return results["methods"].setdefault(method, {"rounds": []})["rounds"]


def round_done(results: dict[str, Any], method: str, r: int) -> bool:
    return any(x["round"] == r for x in results["methods"].get(method, {}).get("rounds", []))


def totals(results: dict[str, Any], method: str) -> dict[str, float]:
    """Cumulative compute of a method's finished rounds (zeros before the first)."""
    rs = results["methods"].get(method, {}).get("rounds", [])
    last = max(rs, key=lambda x: x["round"]) if rs else None
    return {k: (last["cumulative"][k] if last else 0) for k in ("seconds", "tokens", "steps", "episodes")}


def add_round(results: dict[str, Any], method: str, record: dict[str, Any]) -> None:
    before = totals(results, method)
    record["cumulative"] = {
        "seconds": before["seconds"] + record["collect"]["seconds"] + record["train"].get("seconds", 0.0),
        "tokens": before["tokens"] + record["collect"]["tokens"],
        "steps": before["steps"] + record["train"].get("steps", 0),
        "episodes": before["episodes"] + record["collect"]["episodes"],
    }
    rs = [x for x in rounds_of(results, method) if x["round"] != record["round"]]
    results["methods"][method]["rounds"] = sorted([*rs, record], key=lambda x: x["round"])


def series(results: dict[str, Any], method: str, env: str, metric: str = "first") -> list[dict[str, Any]]:
    """Points (compute, accuracy, CI, version) of one method on one env, the base first (at 0 compute)."""
    out = []
    base = results["base"].get(env)
    if base:
        out.append(_point(base, "base", {"seconds": 0, "tokens": 0, "steps": 0}, metric))
    for r in results["methods"].get(method, {}).get("rounds", []):
        if env in r.get("evals", {}):
            out.append(_point(r["evals"][env], r["version"], r["cumulative"], metric))
    return out


def _point(ev: dict[str, Any], version: str, cum: dict[str, Any], metric: str) -> dict[str, Any]:
    key = "first_try" if metric == "first" else "final"
    acc, ci = ev[f"{key}_accuracy"], ev[f"{key}_ci95"]
    return {"version": version, "minutes": cum["seconds"] / 60, "tokens": cum["tokens"], "steps": cum["steps"],
            "acc": acc, "lo": ci[0], "hi": ci[1], "outcomes": ev.get(metric, [])}


# --------------------------------------------------------------------------- statistics and text (pure)
def mcnemar_p(new: list[int], old: list[int]) -> tuple[int, int, float]:
    """Paired outcomes → (tasks only ``new`` solved, tasks only ``old`` solved, one-sided exact p that new > old).

    >>> mcnemar_p([1, 1, 1, 0], [0, 0, 0, 0])
    (3, 0, 0.125)
    """
    wins = sum(a and not b for a, b in zip(new, old, strict=True))
    losses = sum(b and not a for a, b in zip(new, old, strict=True))
    n = wins + losses
    p = sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n if n else 1.0
    return wins, losses, p


def verdicts(results: dict[str, Any], alpha: float = 0.05) -> list[dict[str, Any]]:
    """Per (method, env): the last version vs the base, first-try, paired."""
    out = []
    for method in results["methods"]:
        for env in results["settings"]["envs"]:
            pts = series(results, method, env)
            if len(pts) < 2 or pts[0]["version"] != "base":
                continue
            base, last = pts[0], pts[-1]
            best = max(pts[1:], key=lambda p: p["acc"])
            wins, losses, p = mcnemar_p(last["outcomes"], base["outcomes"])
            _, _, p_drop = mcnemar_p(base["outcomes"], last["outcomes"])
            out.append({"method": method, "env": env, "base": base["acc"], "last": last["acc"], "best": best["acc"],
                        "last_version": last["version"], "best_version": best["version"], "wins": wins,
                        "losses": losses, "p": p, "improved": p < alpha, "dropped": p_drop < alpha,
                        "n": len(base["outcomes"])})
    return out


def did_not_improve_text(results: dict[str, Any], alpha: float = 0.05) -> str:
    """The "What did not improve" section, generated from the numbers."""
    vs = verdicts(results, alpha)
    target = results["settings"]["envs"][0]
    lines = []
    if not vs:
        return "No method has a trained version evaluated yet.\n"
    for v in vs:
        head = f"- **{v['method']}** on `{v['env']}`: base {v['base']:.1%} → last version `{v['last_version']}` {v['last']:.1%}"
        paired = f"(paired over {v['n']} tasks: +{v['wins']} / −{v['losses']}, one-sided p = {v['p']:.3f})"
        if v["improved"]:
            lines.append(f"{head} {paired}: improved.")
        elif v["dropped"]:
            lines.append(f"{head} {paired}: **got worse** than the base.")
        else:
            extra = (f"; its best version `{v['best_version']}` reached {v['best']:.1%}, picked after the fact"
                     if v["best"] > v["last"] else "")
            lines.append(f"{head} {paired}: **did not beat the base**{extra}.")
    failed = sorted({v["method"] for v in vs if v["env"] == target and not v["improved"] and v["method"] != "memory"})
    text = "\n".join(lines) + "\n"
    if failed:
        text += (
            f"\nNo significant first-try gain on the target `{target}` for: {', '.join(failed)}. This is what the R3 "
            "paper predicts at this size: it reports that models under 1.5B parameters failed to learn to reflect "
            "at all (the embedded model has 135M), so a flat curve here is expected and is not evidence against the "
            "method at 1.5B+ — see the recipe below.\n"
        )
    skipped = [(m, r["round"], r["train"]["skipped"]) for m, x in results["methods"].items() for r in x["rounds"]
               if r["train"].get("skipped")]
    for m, r, why in skipped:
        text += f"\n- {m} round {r}: training was skipped, the version did not change — {why}"
    if skipped:
        text += "\n"
    drops = [v for v in vs if v["env"] != target and v["dropped"]]
    if drops:
        text += "\nForgetting: " + ", ".join(f"{v['method']} on `{v['env']}`" for v in drops) + " dropped significantly.\n"
    else:
        text += "\nNo method dropped significantly on the non-target environment(s).\n"
    return text


def table(results: dict[str, Any]) -> str:
    """Markdown table: one row per evaluated version per env."""
    rows = ["| method | version | env | first try (95% CI) | final (95% CI) | compute min | tokens | train steps |",
            "|---|---|---|---|---|---|---|---|"]
    for env in results["settings"]["envs"]:
        if env in results["base"]:
            rows.append(_row("(all)", "base", env, results["base"][env], {"seconds": 0, "tokens": 0, "steps": 0}))
        for method, m in results["methods"].items():
            for r in m["rounds"]:
                if env in r.get("evals", {}):
                    rows.append(_row(method, r["version"], env, r["evals"][env], r["cumulative"]))
    return "\n".join(rows) + "\n"


def _row(method: str, version: str, env: str, ev: dict[str, Any], cum: dict[str, Any]) -> str:
    f, fl = ev["first_try_ci95"], ev["final_ci95"]
    return (f"| {method} | `{version}` | `{env}` | {ev['first_try_accuracy']:.1%} ({f[0]:.0%}–{f[1]:.0%}) | "
            f"{ev['final_accuracy']:.1%} ({fl[0]:.0%}–{fl[1]:.0%}) | {cum['seconds'] / 60:.1f} | {cum['tokens']:,} | "
            f"{cum['steps']} |")


def slug(env: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in env).strip("_")


def write_plots(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """One PNG per env: first-try and final accuracy vs cumulative compute, a line per method, CI error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for env in results["settings"]["envs"]:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
        for ax, metric, title in ((axes[0], "first", "first try"), (axes[1], "final", "final (after reflect+retry)")):
            for method in results["methods"]:
                pts = series(results, method, env, metric)
                if not pts:
                    continue
                x = [p["minutes"] for p in pts]
                y = [p["acc"] for p in pts]
                err = [[max(0.0, p["acc"] - p["lo"]) for p in pts], [max(0.0, p["hi"] - p["acc"]) for p in pts]]
                ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=method)
            ax.set_title(f"{env}: {title}", fontsize=9)
            ax.set_xlabel("cumulative compute (collect + train), minutes")
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("held-out accuracy (95% Wilson CI)")
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"learning_{slug(env)}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


RECIPE = """## Recipe for a larger model on a GPU

The R3 paper's gains start at 1.5B parameters. The same harness runs there; only the model spec and the
trainer settings change. Config (the paper's settings, `trainer.config.GPU_OVERRIDES` /
`GPU_GRPO_OVERRIDES`, applied by `train(..., gpu=True)`):

| setting | value |
|---|---|
| model | `vllm:/models/Qwen2.5-1.5B-Instruct` (episodes) and the same local HF dir as `base_model` (training) — or `hf:/models/Qwen2.5-1.5B-Instruct` for both |
| fine-tune | full (`use_lora=False`), bf16 |
| KL (`beta`) | 0.001 |
| learning rate | 5e-7, cosine schedule, warmup 0.03 (`warmup_steps=0.03`, a ratio) |
| group size / batch | `num_generations=8`, `per_device_train_batch_size=32` (paper: effective batch 256 over 4–8 H100s) |
| lengths | `max_completion_length=512`, `retry_max_new_tokens=512` |
| steps | paper: up to 1,750; start with `--rounds 10 --steps-per-round 50` |
| envs | `countdown` and `function_calling` (the paper's tasks), plus `arithmetic:answer_format=strict` |

How to run (the model directory must already be on disk: nothing is downloaded at run time):

```bash
pip install -e '.[vllm]'     # the GPU extra
python -m bench.learning --model hf:/models/Qwen2.5-1.5B-Instruct --gpu \\
    --envs countdown,function_calling --rounds 10 --episodes-per-round 256 --steps-per-round 50 \\
    --eval-n 500 --max-tokens 512 --budget-minutes 240 --workspace runs/learning-1.5b
```

`--gpu` passes `gpu=True` to `trainer.train.train` (the settings above); `--train-overrides` takes a JSON
object of further `ReflectionGRPOConfig` / `SFTConfig` fields (e.g. `'{"per_device_train_batch_size": 8}'`
on one GPU). Expected at 1.5B from the paper: Countdown first try 6.0% → 34.9%, APIGen 32.6% → 48.6%.
"""


def render_doc(results: dict[str, Any], command: str, plots: list[Path], *, machine: str = "", when: str = "",
               smoke: bool = False, estimate: str = "") -> str:
    s = results["settings"]
    banner = ("> **SMOKE RUN (`--quick`), not the result.** Tiny numbers (8-task evals) that only show the harness "
              "works end to end; the CIs are too wide to conclude anything. The full run has not been executed.\n\n"
              if smoke else "")
    imgs = "\n".join(f"![{p.stem}](img/{p.name})" for p in plots)
    return f"""# Self-improvement proof (`bench/learning.py`)

{banner}Does training on its own experience make the embedded model better on held-out tasks, per unit of
compute? Each method starts from a fresh workspace and the same base model `{s['model']}`; each round
collects {s['episodes_per_round']} episodes (train split of `{s.get('train_env', s['envs'][0])}`, temperature 0.7, reflect+retry),
trains {s['steps_per_round']} optimizer step(s), promotes the new version and evaluates it on the same
{s['eval_n']} held-out tasks per environment (greedy, ≤ 2 attempts, ≤ {s['max_tokens']} new tokens). `memory`
never updates weights: it is evaluated with retrieval of past successes on. Compute = wall time of collection +
training; tokens = tokens of the collected episodes. Budget per method: {s['budget_minutes']} min, ≤ {s['rounds']} rounds.
Rewards: the training env's verifier, 0/1 (R3's bare retry reward, `retry_format_weight=0`). The target metric is
first-try accuracy on `{s['envs'][0]}`; training runs on `{s.get('train_env', s['envs'][0])}` because a strict 0/1
reward is all zeros at 135M (DESIGN.md, known pitfalls), so any strict gain must transfer from there.

## Results

{table(results)}
{imgs}

## What did not improve

Verdict per method and env: the **last** version vs the base on first-try accuracy, exact one-sided McNemar
test on the paired per-task outcomes (α = 0.05).

{did_not_improve_text(results)}
## Cost
{estimate}

{RECIPE}
## Reproduce

_Command:_ `{command}`  \n_Machine:_ {machine}  \n_When:_ {when}  \n_Results file:_ `{s.get('results_path', '')}`
"""


# --------------------------------------------------------------------------- running (needs the model)
async def evaluate_version(policy, env, n: int, max_tokens: int, library=None, on_episode=None):
    """``agent.evaluate.evaluate`` with retrieval from ``library`` on (memory method) and nothing recorded."""
    from agent.evaluate import EvalResult, unique_eval_tasks
    from agent.graph import GraphDeps
    from agent.runner import eval_config, run_episodes

    if library is None:
        from agent.evaluate import evaluate

        return await evaluate(policy, env, n, seed=EVAL_SEED, max_attempts=2, max_tokens=max_tokens, concurrency=32,
                              on_episode=on_episode)
    tasks = unique_eval_tasks(env, n, EVAL_SEED)
    config = eval_config(max_attempts=2, max_tokens=max_tokens).model_copy(update={"retrieval": True, "record": False})
    episodes, summary = await run_episodes(tasks, GraphDeps(policy, env, config, library), concurrency=32,
                                           seed=EVAL_SEED, metadata={"purpose": "eval"},
                                           on_episode=on_episode)
    by_task = {ep.task.id: ep for ep in episodes}
    first = [int(t.id in by_task and by_task[t.id].first_success) for t in tasks]
    final = [int(t.id in by_task and by_task[t.id].success) for t in tasks]
    return EvalResult(env=env.spec, version=policy.version, n=n, seed=EVAL_SEED, max_attempts=2,
                      task_ids=[t.id for t in tasks], first=first, final=final, seconds=summary.seconds,
                      tokens=summary.tokens, errors=[e.error for e in summary.errors])


def _eval_record(res) -> dict[str, Any]:
    return {**res.summary(), "first": res.first, "final": res.final, "task_ids": res.task_ids}


class Harness:
    def __init__(self, args: argparse.Namespace, results: dict[str, Any], results_path: Path, progress) -> None:
        from environments import get_environment

        self.args, self.results, self.path, self.progress = args, results, results_path, progress
        self.envs = {spec: get_environment(spec) for spec in args.envs}
        self.train_env = get_environment(args.train_env)
        self.bar = progress.add_task("starting", total=None)

    def say(self, text: str, total: int | None = None) -> None:
        self.progress.update(self.bar, description=text, completed=0, total=total)

    def tick(self, *_: Any) -> None:
        self.progress.advance(self.bar)

    async def eval_all(self, policy, library=None) -> dict[str, Any]:
        out = {}
        for spec, env in self.envs.items():
            self.say(f"eval {policy.version} on {spec}", total=self.args.eval_n)
            res = await evaluate_version(policy, env, self.args.eval_n, self.args.max_tokens, library, self.tick)
            if res.errors and len(res.errors) == len(res.first):
                raise RuntimeError(f"every eval episode failed (a bug, not the model): {res.errors[0]}")
            out[spec] = _eval_record(res)
        return out

    async def base(self) -> None:
        if all(s in self.results["base"] for s in self.envs):
            return
        from agent.policy import load_policy

        policy = load_policy(self.args.model)
        try:
            self.results["base"].update(await self.eval_all(policy))
        finally:
            await policy.aclose()
        save_results(self.path, self.results)

    async def method(self, method: str) -> None:
        from agent.serving import open_library, serving_policy

        ws = self.args.workspace / method
        lib = open_library(ws)
        policy = serving_policy(self.args.model, lib)
        try:
            for r in range(1, self.args.rounds + 1):
                if round_done(self.results, method, r):
                    continue
                spent = totals(self.results, method)["seconds"] / 60
                if spent >= self.args.budget_minutes:
                    self.progress.console.print(f"{method}: budget reached ({spent:.1f} min) before round {r}")
                    break
                record = await self.one_round(method, r, lib, policy)
                add_round(self.results, method, record)
                save_results(self.path, self.results)
                c = record["cumulative"]
                accs = ", ".join(f"{e}: {v['first_try_accuracy']:.0%}/{v['final_accuracy']:.0%}"
                                 for e, v in record["evals"].items())
                self.progress.console.print(f"{method} round {r}: {record['version']} | {accs} | "
                                            f"{c['seconds'] / 60:.1f} min, {c['tokens']:,} tok, {c['steps']} steps")
        finally:
            await policy.aclose()
            lib.close()

    async def one_round(self, method: str, r: int, lib, policy) -> dict[str, Any]:
        from agent.graph import EpisodeConfig, GraphDeps
        from agent.runner import run_episodes
        from memory.records import Run
        from trainer import registry
        from trainer.train import NotEnoughDataError, train

        spec, a = self.args.train_env, self.args
        run_id = f"round-{r}"
        try:
            lib.get_run(run_id)
        except KeyError:
            lib.start_run(Run(id=run_id, kind="run", env=spec, model_version=policy.version, config={"round": r}))
        memory = method == "memory"
        cfg = EpisodeConfig(max_attempts=2, critique=False, retrieval=memory, temperature=0.7,
                            solve_tokens=a.max_tokens, reflect_tokens=a.max_tokens)
        have = lib.count(run_id=run_id)
        need = a.episodes_per_round - have
        self.say(f"{method} r{r}: collect {need} on {spec} ({policy.version})", total=need)
        t0 = time.perf_counter()
        tokens = 0
        if need > 0:
            tasks = self.train_env.sample(need, "train", seed=SEED * 1_000_003 + r * 10_007 + have)
            _, summary = await run_episodes(tasks, GraphDeps(policy, self.train_env, cfg, lib), concurrency=16,
                                            run_id=run_id, metadata={"purpose": "learning", "round": r},
                                            on_episode=self.tick)
            if summary.errors and summary.episodes == 0:
                raise RuntimeError(f"every collection episode failed (a bug, not the model): {summary.errors[0].error}")
        eps = lib.episodes(run_id=run_id)
        tokens = sum(e.tokens for e in eps)
        collect = {"episodes": len(eps), "seconds": time.perf_counter() - t0, "tokens": tokens,
                   "first_try_accuracy": sum(e.first_success for e in eps) / max(len(eps), 1),
                   "final_accuracy": sum(e.success for e in eps) / max(len(eps), 1)}
        train_rec: dict[str, Any] = {"steps": 0, "seconds": 0.0}
        version = policy.version
        if not memory:
            self.say(f"{method} r{r}: train {a.steps_per_round} step(s)", total=a.steps_per_round)
            t1 = time.perf_counter()
            try:
                mv = await asyncio.to_thread(
                    train, lib, method, steps=a.steps_per_round, env=spec, overrides=self.overrides(method),
                    progress=lambda step, total, logs: self.progress.update(self.bar, completed=step, total=total),
                    gpu=a.gpu,
                )
            except NotEnoughDataError as e:
                train_rec.update(skipped=str(e), seconds=time.perf_counter() - t1)
            else:
                registry.promote(lib, mv.id, note=f"bench.learning round {r}")
                await asyncio.to_thread(policy.set_adapter, mv.id, mv.adapter_path)
                version = mv.id
                train_rec = {"steps": int(mv.metrics.get("steps", a.steps_per_round)),
                             "seconds": time.perf_counter() - t1,
                             "metrics": {k: v for k, v in mv.metrics.items() if isinstance(v, int | float)}}
        lib.finish_run(run_id, {"collect": collect})
        evals = await self.eval_all(policy, lib if memory else None)
        return {"round": r, "version": version if not memory else f"memory-r{r}", "collect": collect,
                "train": train_rec, "evals": evals}

    def overrides(self, method: str) -> dict[str, Any]:
        from agent.policy.base import parse_model_spec

        o: dict[str, Any] = {"report_to": [], "save_steps": 1000}
        if self.args.model != "default":
            o["base_model"] = parse_model_spec(self.args.model).path
        if method.startswith("grpo") and not self.args.gpu:
            o.update(max_completion_length=self.args.max_tokens, retry_max_new_tokens=self.args.max_tokens)
        return {**o, **json.loads(self.args.train_overrides or "{}")}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="Smoke check: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    ap.add_argument("--model", default="default")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--envs", default=",".join(DEFAULT_ENVS), help="Comma list of eval envs; the first is the target.")
    ap.add_argument("--train-env", default=DEFAULT_TRAIN_ENV, help="Env whose train split is collected and trained on.")
    ap.add_argument("--budget-minutes", type=float, help="Compute (collect + train) per method.")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--episodes-per-round", type=int)
    ap.add_argument("--steps-per-round", type=int)
    ap.add_argument("--eval-n", type=int)
    ap.add_argument("--max-tokens", type=int)
    ap.add_argument("--workspace", type=Path, default=ROOT / "runs" / "learning")
    ap.add_argument("--resume", action="store_true", help="Skip what the workspace's results.json already holds.")
    ap.add_argument("--gpu", action="store_true", help="Train with the paper's GPU settings (trainer.config.GPU_OVERRIDES).")
    ap.add_argument("--train-overrides", help="JSON object of extra trainer config fields.")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice).")
    ap.add_argument("--doc", type=Path, default=DOC, help="Markdown to write; its plots go to <doc dir>/img/.")
    ap.add_argument("--report-only", action="store_true", help="Only re-render the doc from results.json.")
    args = ap.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for k, v in preset.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in args.methods if m not in METHODS]
    if bad:
        ap.error(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(METHODS)}")
    args.envs = [e.strip() for e in args.envs.split(",") if e.strip()]
    return args


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    return {"model": args.model, "envs": args.envs, "train_env": args.train_env, "methods": args.methods, "rounds": args.rounds,
            "episodes_per_round": args.episodes_per_round, "steps_per_round": args.steps_per_round,
            "eval_n": args.eval_n, "max_tokens": args.max_tokens, "budget_minutes": args.budget_minutes,
            "quick": args.quick, "gpu": args.gpu, "results_path": str(args.workspace / "results.json")}


def cost_estimate(results: dict[str, Any], wall_s: float | None) -> str:
    """What this run cost, and — for a quick run — a linear extrapolation to the full defaults."""
    s = results["settings"]
    per = {m: totals(results, m)["seconds"] for m in results["methods"]}
    evals = [ev["seconds"] for ev in results["base"].values()]
    evals += [ev["seconds"] for m in results["methods"].values() for r in m["rounds"] for ev in r["evals"].values()]
    text = "Compute per method (collect + train): " + ", ".join(f"{m} {v / 60:.1f} min" for m, v in per.items())
    text += f"; evaluation: {sum(evals) / 60:.1f} min over {len(evals)} evals."
    if wall_s is not None:
        text += f" Whole run: {wall_s / 60:.1f} min wall."
    if not s.get("quick") or not results["methods"]:
        return text + "\n"
    scale_ep = FULL["episodes_per_round"] / s["episodes_per_round"]
    scale_eval = FULL["eval_n"] / s["eval_n"] * FULL["max_tokens"] / s["max_tokens"]
    rounds = [r for m in results["methods"].values() for r in m["rounds"]]
    collect = sum(r["collect"]["seconds"] for r in rounds) / len(rounds) * scale_ep * FULL["max_tokens"] / s["max_tokens"]
    step = [r["train"]["seconds"] / r["train"]["steps"] for r in rounds if r["train"].get("steps")]
    per_step = max(step) if step else 0.0  # the slowest method's s/step (incl. model load), pessimistic
    n_methods = len(METHODS)
    train = (n_methods - 1) * FULL["rounds"] * FULL["steps_per_round"] * per_step * FULL["max_tokens"] / s["max_tokens"]
    one_eval = sorted(evals)[len(evals) // 2] * scale_eval if evals else 0.0  # median: the first eval is cold
    total = n_methods * FULL["rounds"] * collect + train + (1 + n_methods * FULL["rounds"]) * one_eval * len(DEFAULT_ENVS)
    return text + (
        f"\n\nEstimate for the full defaults ({', '.join(f'{k}={v}' for k, v in FULL.items())}), linear in episodes, "
        f"eval tasks and tokens from this quick run: collection ≈ {collect / 60:.1f} min/round, training ≈ "
        f"{per_step * FULL['max_tokens'] / s['max_tokens']:.0f} s/step (slowest method), one eval ≈ {one_eval / 60:.1f} min "
        f"→ **≈ {total / 3600:.1f} CPU-hours** for {n_methods} methods × {FULL['rounds']} rounds on this machine. "
        "The per-method budget caps any overrun.\n"
    )


def write_report(args: argparse.Namespace, results: dict[str, Any], command: str, wall_s: float | None) -> Path:
    from bench._report import git_rev, machine

    plots = write_plots(results, args.doc.parent / "img")
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()) + f", commit {git_rev()}"
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(render_doc(results, command, plots, machine=machine(), when=when, smoke=args.quick,
                                   estimate=cost_estimate(results, wall_s)))
    return args.doc


def main(argv: list[str] | None = None) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    path = args.workspace / "results.json"
    if args.report_only:  # render what the file holds, with its own settings
        results = json.loads(path.read_text())
        args.quick = bool(results["settings"].get("quick"))
        print("wrote", write_report(args, results, results["settings"].get("command", "?"), results.get("wall_seconds")))
        return
    results = load_results(path, settings_of(args), resume=args.resume)
    command = "python -m bench.learning " + " ".join(sys.argv[1:] if argv is None else argv)
    results["settings"]["command"] = command
    if args.workspace.exists() and not args.resume and any(args.workspace.iterdir()):
        raise SystemExit(f"{args.workspace} is not empty: pass --resume to continue it, or another --workspace")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    start = time.perf_counter() - results.get("wall_seconds", 0.0)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn()) as progress:
        h = Harness(args, results, path, progress)
        asyncio.run(h.base())
        for method in args.methods:
            asyncio.run(h.method(method))
            results["wall_seconds"] = time.perf_counter() - start
            save_results(path, results)
    print(table(results))
    print("wrote", write_report(args, results, command, time.perf_counter() - start), "and", path)


if __name__ == "__main__":
    main()
