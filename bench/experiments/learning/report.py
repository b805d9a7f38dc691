"""The learning experiment's report (pure): markdown table, "What did not improve" text, exact McNemar test, plots, cost, doc.

Everything here is computed from the results file alone (:mod:`bench.experiments.learning.results`), so ``--report-only``
re-renders ``docs/learning.md`` and its plots without the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.experiments.common import mcnemar_p
from bench.experiments.learning.results import DEFAULT_ENVS, FULL, METHODS, series, totals
from trainer.gate import wilson


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
        text += f"\nNo significant first-try gain on the target `{target}` for: {', '.join(failed)}.\n"
    dead = zero_signal_methods(results)
    if dead:
        text += (f"\n{', '.join(dead)}: every training step's reward was the same for the whole group (zero-variance "
                 "share 1.0, or mean reward 0), so the gradient was zero by construction — this run cannot tell "
                 "whether the method works; it did not test it.\n")
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
    rows = ["| method | version | env | first try (95% CI) | final (95% CI) | recovered by retry (95% CI) | compute min | "
            "tokens | train steps |", "|---|---|---|---|---|---|---|---|---|"]
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
    rec, failed = recovery(ev)
    lo, hi = wilson(rec, failed)
    recovered = f"{rec}/{failed} = {rec / failed:.1%} ({lo:.0%}–{hi:.0%})" if failed else "no failures"
    return (f"| {method} | `{version}` | `{env}` | {ev['first_try_accuracy']:.1%} ({f[0]:.0%}–{f[1]:.0%}) | "
            f"{ev['final_accuracy']:.1%} ({fl[0]:.0%}–{fl[1]:.0%}) | {recovered} | {cum['seconds'] / 60:.1f} | "
            f"{cum['tokens']:,} | {cum['steps']} |")


def recovery(ev: dict[str, Any]) -> tuple[int, int]:
    """(first-try failures the retry solved, first-try failures) of one eval record.

    >>> recovery({"first": [1, 0, 0, 0], "final": [1, 1, 0, 0]})
    (1, 3)
    """
    pairs = list(zip(ev.get("first", []), ev.get("final", []), strict=True))
    return sum(1 for a, b in pairs if not a and b), sum(1 for a, _ in pairs if not a)


SIGNAL_KEYS = (("train/reward_mean", "mean reward"), ("train/dynamic/zero_variance_share_mean", "zero-variance share"),
               ("train/dynamic/kept_groups_mean", "groups kept / step"), ("train/dynamic/empty_steps_mean", "empty steps"))


def signal_table(results: dict[str, Any]) -> str:
    """Per trained round: the reward the method trained on, and (GRPO family) the share of all-equal groups."""
    rows = ["| method | round | version | steps | " + " | ".join(label for _, label in SIGNAL_KEYS) + " |",
            "|---|---|---|---|" + "---|" * len(SIGNAL_KEYS)]
    for method, m in results["methods"].items():
        for r in m["rounds"]:
            metrics = r["train"].get("metrics") or {}
            if not r["train"].get("steps"):
                continue
            cells = [f"{metrics[k]:.3f}" if k in metrics else "–" for k, _ in SIGNAL_KEYS]
            rows.append(f"| {method} | {r['round']} | `{r['version']}` | {r['train']['steps']} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def zero_signal_methods(results: dict[str, Any]) -> list[str]:
    """GRPO-family methods whose every trained round had no reward variance (all-equal groups or reward 0)."""
    dead = []
    for method, m in results["methods"].items():
        rounds = [(r["train"].get("metrics") or {}) for r in m["rounds"] if r["train"].get("steps")]
        if rounds and all("train/reward_mean" in x for x in rounds) and all(
                x.get("train/dynamic/zero_variance_share_mean", 0.0) >= 1.0 or x["train/reward_mean"] == 0 for x in rounds):
            dead.append(method)
    return dead


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

The R3 paper reports its gains from 1.5B parameters up. The same harness runs there; only the model spec and the
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
python -m bench.experiments.learning --model hf:/models/Qwen2.5-1.5B-Instruct --gpu \\
    --envs countdown,function_calling --rounds 10 --episodes-per-round 256 --steps-per-round 50 \\
    --eval-n 500 --max-tokens 512 --budget-minutes 240 --workspace runs/learning-1.5b
```

`--gpu` passes `gpu=True` to `trainer.train.train` (the settings above); `--train-overrides` takes a JSON
object of further `ReflectionGRPOConfig` / `SFTConfig` fields (e.g. `'{"per_device_train_batch_size": 8}'`
on one GPU). Expected at 1.5B from the paper: Countdown first try 6.0% → 34.9%, APIGen 32.6% → 48.6%.
"""


def render_doc(results: dict[str, Any], command: str, plots: list[Path], *, machine: str = "", when: str = "",
               smoke: bool = False, estimate: str = "", notes: str = "") -> str:
    """The whole docs/learning.md. ``notes``: hand-written reading of the numbers (markdown), kept verbatim
    under "Findings" so re-rendering from results.json never loses it."""
    s = results["settings"]
    findings = f"## Findings\n\n{notes.strip()}\n\n" if notes.strip() else ""
    banner = ("> **SMOKE RUN (`--quick`), not the result.** Tiny numbers (8-task evals) that only show the harness "
              "works end to end; the CIs are too wide to conclude anything. The full run has not been executed.\n\n"
              if smoke else "")
    imgs = "\n".join(f"![{p.stem}](img/{p.name})" for p in plots)
    return f"""# Self-improvement proof (`bench/experiments/learning`)

{banner}Does training on its own experience make the embedded model better on held-out tasks, per unit of
compute? Each method starts from a fresh workspace and the same base model `{s['model']}`; each round
collects {s['episodes_per_round']} episodes (train split of `{s.get('train_env', s['envs'][0])}`, temperature 0.7, reflect+retry),
trains {s['steps_per_round']} optimizer step(s), promotes the new version and evaluates it on the same
{s['eval_n']} held-out tasks per environment (greedy, ≤ 2 attempts, ≤ {s['max_tokens']} new tokens). `memory`
never updates weights: it is evaluated with retrieval of past successes on. Compute = wall time of collection +
training; tokens = tokens of the collected episodes. Budget per method: {s['budget_minutes']} min, ≤ {s['rounds']} rounds.
Rewards: the training env's verifier. R3 (`grpo-reflection`) gets the paper's bare 0/1 on the retry
(`retry_format_weight=0`); plain `grpo` gets the env's reward for the first attempt, which for a train env with
`untagged_credit=c` is 1 for the right number inside `<answer>` tags, c for the right number without them and 0
otherwise (a bare strict 0/1 is almost always 0 at 135M: ~9% of its samples use the tags at all). `sft` trains on
strict successes plus, with `reformat_answers` on (the default), failed first attempts whose number was right but
untagged, the number put into `<answer>` tags by the env's `reformat` hook and re-verified — the model's own
words and number, the format fixed. Success — what memory retrieves and what every table counts — is strict in all
cases. The target metric is first-try accuracy on `{s['envs'][0]}`; a lenient `arithmetic` eval (same
tasks, any final number counts), if listed, tells a learned format apart from learned arithmetic.

{findings}## Results

"Recovered by retry": of the held-out tasks the version got wrong on the first try, how many its second
attempt (reflect + retry) solved.

{table(results)}
{imgs}

## Training signal

What each trained round was trained on (means over its steps, from the trainer's log): a GRPO group whose
rewards are all equal has zero advantage and teaches nothing; with dynamic sampling (the default for the GRPO
family) such groups are dropped and replaced, and the share of them in the first draw is logged.

{signal_table(results)}
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
