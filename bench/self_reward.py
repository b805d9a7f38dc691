"""Self-reward vs ground truth on the embedded model, and self-reward vs verifier training at equal compute.

    python -m bench.self_reward --quick                      # smoke check (minutes)
    python -m bench.self_reward                              # defaults: 32 episodes, 2 rounds, 4 steps, eval 32
    python -m bench.self_reward --episodes 16 --rounds 2 --steps 2 --eval-n 16 --max-tokens 48

(a) Generation–verification gap. N episodes of ``arithmetic`` (lenient, the 135M model's boundary band)
    with each feedback source in {verifier, majority, critique}, and N of ``open_ended`` with {rubric}
    (its ground truth = the code-checkable rubric items). One attempt per episode (no reflect/retry),
    temperature 0.7, the same tasks for every arithmetic source; each source records into its own fresh
    library (``<workspace>/<source>/``). Per source, computed from ``Attempt.feedback`` vs
    ``Attempt.ground_truth`` (for ``verifier`` the feedback *is* the truth): self-reward success rate,
    true success rate, agreement, false-positive rate = P(self says correct | truth says wrong), each
    with a 95% Wilson CI.
(b) Training at equal compute, ``verifier`` vs ``majority`` on arithmetic: R rounds of collect N episodes
    (round 1 reuses part (a)'s episodes: same base policy, same settings) → ``train(method, steps=S)``
    (SFT on the episodes the *source* judged successful; ``--method grpo`` also works) → promote →
    evaluate on the same held-out tasks with the real verifier (greedy, first try). Equal compute = the
    same episodes, steps and method per round; wall time is reported (majority pays for its k extra
    samples). Per policy version: pseudo-reward (mean self-reward of the episodes it collected), true
    accuracy of those episodes, held-out accuracy. The SRT collapse signature is pseudo-reward rising
    while held-out accuracy falls between consecutive versions; the report says where it begins, if
    anywhere.

Results go to ``<workspace>/results.json``; ``--doc`` (docs/self_reward_results.md) and
``docs/img/self_reward_*.png`` are rendered from it (``--report-only`` re-renders).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "self_reward_results.md"
ARITH = "arithmetic"  # lenient: ~46% base first-try; strict is ~0% at 135M (all-zero rewards)
OPEN = "open_ended"
GAP_SOURCES = (("verifier", ARITH), ("majority", ARITH), ("critique", ARITH), ("rubric", OPEN))
TRAIN_SOURCES = ("verifier", "majority")
FULL = dict(episodes=32, rounds=2, steps=4, eval_n=32, max_tokens=48)
QUICK = dict(episodes=8, rounds=1, steps=1, eval_n=8, max_tokens=48)
SEED = 0
EVAL_SEED = 1234
TEMPERATURE = 0.7


# --------------------------------------------------------------------------- statistics (pure)
from trainer.gate import wilson  # noqa: E402  (the one definition of the 95% interval)


def _rate(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson(k, n)
    return {"k": k, "n": n, "p": (k / n) if n else None, "lo": lo, "hi": hi}


def judged_pairs(episodes: list[Any], source: str) -> list[tuple[bool, bool, float, bool]]:
    """(self says correct, truth says correct, self reward, unreliable) per attempt that has a truth.

    For ``verifier`` the feedback is the truth. A self-reward attempt without ground truth (an env
    without a verifier) is skipped: there is nothing to measure it against.
    """
    from agent.feedback import UNRELIABLE

    out = []
    for ep in episodes:
        for a in ep.attempts:
            if source == "verifier":
                truth = a.feedback
            else:
                truth = a.ground_truth
                if truth is None:
                    continue
            out.append((bool(a.feedback.success), bool(truth.success), float(a.feedback.reward),
                        a.feedback.message.startswith(UNRELIABLE)))
    return out


def gap_metrics(pairs: list[tuple[bool, bool, float, bool]]) -> dict[str, Any]:
    """Self-reward success, true success, agreement and false-positive rate (with 95% Wilson CIs).

    >>> m = gap_metrics([(True, True, 1.0, False), (True, False, 1.0, False), (False, False, 0.0, True)])
    >>> m["self"]["k"], m["truth"]["k"], m["agreement"]["k"], m["fpr"]["k"], m["fpr"]["n"], m["unreliable"]
    (2, 1, 2, 1, 2, 1)
    """
    n = len(pairs)
    selfs = sum(s for s, _, _, _ in pairs)
    truths = sum(t for _, t, _, _ in pairs)
    agree = sum(s == t for s, t, _, _ in pairs)
    negatives = [s for s, t, _, _ in pairs if not t]
    positives = [s for s, t, _, _ in pairs if t]
    return {
        "n": n,
        "self": _rate(selfs, n),
        "truth": _rate(truths, n),
        "agreement": _rate(agree, n),
        "fpr": _rate(sum(negatives), len(negatives)),  # self says correct | truth says wrong
        "fnr": _rate(sum(not s for s in positives), len(positives)),  # self says wrong | truth says correct
        "mean_self_reward": (sum(r for _, _, r, _ in pairs) / n) if n else None,
        "unreliable": sum(u for _, _, _, u in pairs),
    }


def collapse_points(versions: list[dict[str, Any]]) -> list[int]:
    """Indices i ≥ 1 where pseudo-reward rose and held-out accuracy fell vs version i-1 (SRT's signature).

    ``versions``: per policy version (0 = base) ``{"pseudo": float | None, "heldout": float | None}``.

    >>> collapse_points([{"pseudo": .4, "heldout": .5}, {"pseudo": .6, "heldout": .3}, {"pseudo": .5, "heldout": .2}])
    [1]
    """
    out = []
    for i in range(1, len(versions)):
        a, b = versions[i - 1], versions[i]
        if None in (a.get("pseudo"), b.get("pseudo"), a.get("heldout"), b.get("heldout")):
            continue
        if b["pseudo"] > a["pseudo"] and b["heldout"] < a["heldout"]:
            out.append(i)
    return out


def version_series(results: dict[str, Any], source: str) -> list[dict[str, Any]]:
    """Per policy version of one training source: pseudo-reward and true accuracy of the episodes it
    collected (None for the last version, which collected nothing) and its held-out accuracy."""
    rounds = sorted(results.get("train", {}).get(source, {}).get("rounds", []), key=lambda r: r["round"])
    base = results.get("base_eval")
    out = [{"version": "base", "pseudo": None, "collect_truth": None,
            "heldout": base["acc"] if base else None, "heldout_lo": base["lo"] if base else None,
            "heldout_hi": base["hi"] if base else None, "outcomes": base.get("outcomes") if base else None}]
    for r in rounds:
        # round r collected with version r-1, then trained version r
        out[-1]["pseudo"] = r["collect"]["mean_self_reward"]
        out[-1]["collect_truth"] = r["collect"]["true_success"]
        ev = r.get("eval")
        out.append({"version": r["version"], "pseudo": None, "collect_truth": None,
                    "heldout": ev["acc"] if ev else None, "heldout_lo": ev["lo"] if ev else None,
                    "heldout_hi": ev["hi"] if ev else None, "outcomes": ev.get("outcomes") if ev else None})
    return out


# --------------------------------------------------------------------------- rendering (pure)
def _pct(r: dict[str, Any]) -> str:
    if not r["n"]:
        return "n/a"
    return f"{r['p']:.0%} ({r['lo']:.0%}–{r['hi']:.0%}) [{r['k']}/{r['n']}]"


def gap_table(results: dict[str, Any]) -> str:
    rows = ["| source | env | attempts | self-reward success | true success | agreement | false-positive rate | "
            "unreliable (majority filter) | wall s |",
            "|---|---|---|---|---|---|---|---|---|"]
    for g in results.get("gap", []):
        m = g["metrics"]
        rows.append(f"| {g['source']} | `{g['env']}` | {m['n']} | {_pct(m['self'])} | {_pct(m['truth'])} | "
                    f"{_pct(m['agreement'])} | {_pct(m['fpr'])} | {m['unreliable']} | {g['seconds']:.0f} |")
    return "\n".join(rows) + "\n"


def train_table(results: dict[str, Any]) -> str:
    rows = ["| source | round | trained version | train rows | pseudo-reward of collected episodes | true success of "
            "collected episodes | held-out accuracy after the round (95% CI) | collect s | train s | eval s |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    base = results.get("base_eval")
    if base:
        rows.append(f"| (both) | 0 | `base` | – | – | – | {base['acc']:.0%} ({base['lo']:.0%}–{base['hi']:.0%}) "
                    f"[{base['k']}/{base['n']}] | – | – | {base['seconds']:.0f} |")
    for source, t in results.get("train", {}).items():
        for r in sorted(t["rounds"], key=lambda x: x["round"]):
            c, ev, tr = r["collect"], r.get("eval"), r["train"]
            held = f"{ev['acc']:.0%} ({ev['lo']:.0%}–{ev['hi']:.0%}) [{ev['k']}/{ev['n']}]" if ev else "n/a"
            rows.append(f"| {source} | {r['round']} | `{r['version']}` | {tr.get('rows', '–')} | "
                        f"{c['mean_self_reward']:.2f} | {c['true_success']:.0%} ({c['episodes']} ep) | {held} | "
                        f"{c['seconds']:.0f} | {tr.get('seconds', 0):.0f} | {ev['seconds'] if ev else 0:.0f} |")
    return "\n".join(rows) + "\n"


def write_plot(results: dict[str, Any], out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    colors = {"verifier": "tab:blue", "majority": "tab:orange"}
    n_versions = 1
    for j, source in enumerate(results.get("train", {})):
        vs = version_series(results, source)
        n_versions = max(n_versions, len(vs))
        c = colors.get(source)
        dx = 0.04 * j  # nudge so overlapping points of the two sources stay visible
        xs = [i for i, v in enumerate(vs) if v["heldout"] is not None]
        ys = [vs[i]["heldout"] for i in xs]
        err = [[max(0.0, vs[i]["heldout"] - vs[i]["heldout_lo"]) for i in xs],
               [max(0.0, vs[i]["heldout_hi"] - vs[i]["heldout"]) for i in xs]]
        ax.errorbar([x + dx for x in xs], ys, yerr=err, marker="o", capsize=3, color=c, label=f"{source}: held-out acc (verifier)")
        px = [i for i, v in enumerate(vs) if v["pseudo"] is not None]
        ax.plot([x + dx for x in px], [vs[i]["pseudo"] for i in px], marker="s", linestyle="--", color=c,
                label=f"{source}: pseudo-reward (train-time)")
    ax.set_xticks(range(n_versions))
    ax.set_xlabel("policy version (0 = base; version i = after round i)")
    ax.set_ylabel("rate")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("arithmetic: self-reward (majority) vs verifier SFT", fontsize=9)
    fig.tight_layout()
    path = out_dir / "self_reward_training.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def findings(results: dict[str, Any]) -> str:
    """Plain statements generated from the numbers."""
    s = results["settings"]
    lines = []
    for g in results.get("gap", []):
        m = g["metrics"]
        if g["source"] == "verifier" or not m["n"]:
            continue
        gap = (m["self"]["p"] - m["truth"]["p"]) if m["n"] else 0.0
        fpr = f"{m['fpr']['p']:.0%} of the truly wrong answers were judged correct" if m["fpr"]["n"] else \
            "no truly wrong answers, so no false-positive rate"
        overlap = not (m["self"]["lo"] > m["truth"]["hi"] or m["truth"]["lo"] > m["self"]["hi"])
        tp = m["self"]["k"] - m["fpr"]["k"]
        prec = (f"; of the {m['self']['k']} answers it judged correct {tp} were ({tp / m['self']['k']:.0%} precision, "
                "the quality of its SFT data)") if m["self"]["k"] else "; it judged no answer correct (no SFT data)"
        lines.append(
            f"- **{g['source']}** on `{g['env']}`: self-reward says {m['self']['p']:.0%} correct, the verifier "
            f"{m['truth']['p']:.0%} ({gap * 100:+.0f} points; the CIs "
            f"{'overlap' if overlap else 'do not overlap'}); agreement {m['agreement']['p']:.0%}; {fpr}{prec}"
            + (f"; {m['unreliable']} of {m['n']} attempts fell under the 0.6 agreement filter (reward 0)"
               if g["source"] == "majority" else "") + ".")
    for source in results.get("train", {}):
        vs = version_series(results, source)
        cps = collapse_points(vs)
        held = " → ".join("n/a" if v["heldout"] is None else f"{v['heldout']:.0%}" for v in vs)
        pseudo = " → ".join(f"{v['pseudo']:.2f}" for v in vs if v["pseudo"] is not None)
        where = (f"the SRT collapse signature (pseudo-reward up, held-out accuracy down) appears at version "
                 f"{', '.join(_collapse_detail(vs, i) for i in cps)}" if cps else
                 "no collapse signature (pseudo-reward rising while held-out accuracy falls) between consecutive versions")
        paired = ""
        rounds = sorted(results["train"][source]["rounds"], key=lambda r: r["round"])
        base = results.get("base_eval")
        if base and rounds and rounds[-1].get("eval") and "outcomes" in base and "outcomes" in rounds[-1]["eval"]:
            from bench.learning import mcnemar_p

            last = rounds[-1]["eval"]["outcomes"]
            wins, losses, p_up = mcnemar_p(last, base["outcomes"])
            _, _, p_down = mcnemar_p(base["outcomes"], last)
            paired = (f"; last version vs base, paired over {len(last)} tasks: +{wins} / −{losses} "
                      f"(exact one-sided McNemar p = {min(p_up, p_down):.2f}, "
                      f"{'significant' if min(p_up, p_down) < 0.05 else 'not significant'})")
        lines.append(f"- **{source}** training: held-out accuracy by version {held}; pseudo-reward of the collected "
                     f"episodes {pseudo}; {where}{paired}.")
    base = results.get("base_eval")
    if base:
        lines.append(f"- With {base['n']} held-out tasks a 95% Wilson CI is about ±{(base['hi'] - base['lo']) / 2:.0%} "
                     f"wide at {base['acc']:.0%}: differences smaller than that are noise. This is a small-N run "
                     f"({s['episodes']} episodes, {s['steps']} SFT step(s) per round); it measures the harness and the "
                     "size of the gap, not whether self-training eventually collapses at this model size.")
    return "\n".join(lines) + "\n"


def _collapse_detail(vs: list[dict[str, Any]], i: int) -> str:
    """'i (pseudo a → b, held-out c → d, paired +w / −l, p = …)' for a collapse point."""
    a, b = vs[i - 1], vs[i]
    text = f"{i} (pseudo-reward {a['pseudo']:.2f} → {b['pseudo']:.2f}, held-out {a['heldout']:.0%} → {b['heldout']:.0%}"
    if a.get("outcomes") and b.get("outcomes") and len(a["outcomes"]) == len(b["outcomes"]):
        from bench.learning import mcnemar_p

        lost, gained, p = mcnemar_p(a["outcomes"], b["outcomes"])  # p that version i-1 beats version i
        text += (f"; paired: {lost} task(s) lost, {gained} gained, one-sided exact p = {p:.2f} — "
                 f"{'a significant drop' if p < 0.05 else 'within noise, so only a candidate onset'}")
    return text + ")"


def render_doc(results: dict[str, Any], command: str, plot: Path | None, *, machine: str = "", when: str = "") -> str:
    s = results["settings"]
    smoke = ("> **SMOKE RUN (`--quick`)** — tiny numbers that only show the harness works.\n\n" if s.get("quick") else "")
    img = f"![pseudo-reward and held-out accuracy per version](img/{plot.name})\n" if plot else ""
    wall = results.get("wall_seconds")
    n_eval = results["base_eval"]["n"] if results.get("base_eval") else s["eval_n"]
    short = (f"; {s['eval_n']} were asked for, the eval split has only {n_eval} distinct tasks"
             if n_eval < s["eval_n"] else "")
    return f"""# Self-reward vs ground truth (`bench/self_reward.py`)

{smoke}Model `{s['model']}` (SmolLM2-135M-Instruct when `default`), CPU. Settings: {s['episodes']} episodes per source
and per round, one attempt per episode (no reflect/retry), temperature {TEMPERATURE}, ≤ {s['max_tokens']} new tokens;
majority = SRT self-consistency with the default k = 4 extra samples (5 votes) and the 0.6 agreement filter;
critique = the model's own `VERDICT: CORRECT/INCORRECT`; rubric = the model grades each rubric item MET / NOT MET
(success iff score ≥ 0.7), its ground truth the code-checkable rubric items. Training: {s['rounds']} round(s) of
collect → `train(method="{s['method']}", steps={s['steps']})` → promote → evaluate on the same {n_eval} held-out
arithmetic tasks (greedy, first try, real verifier{short}). SFT trains on the episodes the *source* judged successful
(majority: those agreeing with a reliable majority), restarting from the base each round on all episodes so far.
Round 1 of training reuses part (a)'s episodes (same base policy and settings). **Small N: read the CIs.**

## (a) Generation–verification gap

Rates per attempt with 95% Wilson CIs and [k/n]. False-positive rate = P(self says correct | verifier says wrong).
For `verifier` the feedback *is* the truth (the reference row).

{gap_table(results)}
## (b) Training at equal compute: verifier vs majority (arithmetic)

"Pseudo-reward" is the mean self-reward (the training signal) of the episodes collected in that round, by the
version before it; "held-out accuracy" is the version trained in that round. Equal compute = same episodes,
steps and method per round; the wall times show what each source actually cost.

{train_table(results)}
{img}
## What the numbers show

{findings(results)}
## Caveats

- Majority's pseudo-reward counts an attempt under the 0.6 agreement filter as 0, so it is a lower bound on how
  often the model agrees with itself, not an accuracy; its rise over rounds means the policy's samples agree more
  (sharpening), which is the precondition SRT's collapse starts from, not by itself a collapse.
- The trained SFT adapters see only the rows each source judged successful ("train rows"): a source with low recall
  (majority) trains on fewer rows at the same step count; one with low precision (critique) would train on wrong answers.
- A collapse flag compares consecutive versions only; with this few held-out tasks a one-task change moves accuracy by
  {100 / max(n_eval, 1):.0f} points, so a flagged onset needs the paired p-value beside it before it means anything.

## Reproduce

_Command:_ `{command}`  \n_Whole run:_ {f'{wall / 60:.1f} min wall' if wall else 'n/a'}  \n_Machine:_ {machine}  \n_When:_ {when}  \n_Results file:_ `{s.get('results_path', '')}`
"""


def write_report(results: dict[str, Any], doc: Path) -> Path:
    from bench._report import git_rev, machine

    plot = write_plot(results, doc.parent / "img") if results.get("train") else None
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()) + f", commit {git_rev()}"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(render_doc(results, results["settings"].get("command", "?"), plot, machine=machine(), when=when))
    return doc


def save_results(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, path)


# --------------------------------------------------------------------------- running (needs the model)
class Harness:
    def __init__(self, args: argparse.Namespace, results: dict[str, Any], path: Path, progress) -> None:
        from environments import get_environment

        self.args, self.results, self.path, self.progress = args, results, path, progress
        self.envs = {ARITH: get_environment(ARITH), OPEN: get_environment(OPEN)}
        self.bar = progress.add_task("starting", total=None)

    def say(self, text: str, total: int | None = None) -> None:
        self.progress.update(self.bar, description=text, completed=0, total=total)

    def tick(self, *_: Any) -> None:
        self.progress.advance(self.bar)

    def print(self, text: str) -> None:
        self.progress.console.print(text)

    def config(self):
        from agent.graph import EpisodeConfig

        t = self.args.max_tokens
        return EpisodeConfig(max_attempts=1, critique=False, retrieval=False, temperature=TEMPERATURE,
                             solve_tokens=t, reflect_tokens=t, critique_tokens=32)

    def tasks(self, env_spec: str, r: int):
        return self.envs[env_spec].sample(self.args.episodes, "train", seed=SEED * 1_000_003 + r * 10_007)

    async def collect(self, source: str, env_spec: str, policy, lib, r: int) -> tuple[list[Any], float]:
        from agent.feedback import make_feedback_source
        from agent.graph import GraphDeps
        from agent.runner import run_episodes
        from memory.records import Run

        env = self.envs[env_spec]
        run_id = f"round-{r}"
        lib.start_run(Run(id=run_id, kind="run", env=env_spec, model_version=policy.version,
                          config={"round": r, "feedback": source}))
        fb = make_feedback_source(source, env)
        self.say(f"{source} r{r}: collect {self.args.episodes} on {env_spec} ({policy.version})", total=self.args.episodes)
        t0 = time.perf_counter()
        episodes, summary = await run_episodes(self.tasks(env_spec, r), GraphDeps(policy, env, self.config(), lib, fb),
                                               concurrency=16, run_id=run_id,
                                               metadata={"purpose": "self_reward_bench", "round": r},
                                               on_episode=self.tick)
        seconds = time.perf_counter() - t0
        if summary.errors and not episodes:
            raise RuntimeError(f"every {source} episode failed (a bug, not the model): {summary.errors[0].error}")
        lib.finish_run(run_id, {"episodes": len(episodes), "errors": len(summary.errors)})
        return episodes, seconds

    async def gap(self, policy, libs: dict[str, Any]) -> None:
        self.results["gap"] = []
        for source, env_spec in GAP_SOURCES:
            episodes, seconds = await self.collect(source, env_spec, policy, libs[source], 1)
            m = gap_metrics(judged_pairs(episodes, source))
            self.results["gap"].append({"source": source, "env": env_spec, "seconds": seconds, "metrics": m,
                                        "tokens": sum(e.tokens for e in episodes)})
            if source in TRAIN_SOURCES:  # round 1 of part (b): the same episodes
                self.results["train"].setdefault(source, {"rounds": []})
                self.results.setdefault("_r1", {})[source] = self.collect_record(episodes, source, seconds)
            save_results(self.path, self.results)
            self.print(f"gap {source} on {env_spec}: self {m['self']['p']:.0%} vs truth {m['truth']['p']:.0%}, "
                       f"agree {m['agreement']['p']:.0%}, FPR {m['fpr']['p'] if m['fpr']['n'] else float('nan'):.0%} "
                       f"({seconds:.0f} s)")

    def collect_record(self, episodes: list[Any], source: str, seconds: float) -> dict[str, Any]:
        m = gap_metrics(judged_pairs(episodes, source))
        return {"episodes": len(episodes), "seconds": seconds, "tokens": sum(e.tokens for e in episodes),
                "mean_self_reward": m["mean_self_reward"] or 0.0, "self_success": m["self"]["p"] or 0.0,
                "true_success": m["truth"]["p"] or 0.0, "unreliable": m["unreliable"]}

    async def evaluate(self, policy) -> dict[str, Any]:
        from agent.evaluate import evaluate

        n = self.args.eval_n
        self.say(f"eval {policy.version} on {ARITH}", total=n)
        res = await evaluate(policy, self.envs[ARITH], n, seed=EVAL_SEED, max_attempts=1,
                             max_tokens=self.args.max_tokens, concurrency=32, on_episode=self.tick)
        if res.errors and len(res.errors) == len(res.first):
            raise RuntimeError(f"every eval episode failed (a bug, not the model): {res.errors[0]}")
        k = sum(res.first)
        lo, hi = wilson(k, len(res.first))
        return {"acc": res.first_try_accuracy, "k": k, "n": len(res.first), "lo": lo, "hi": hi,
                "seconds": res.seconds, "outcomes": res.first}

    async def train_source(self, source: str, lib) -> None:
        from agent.serving import serving_policy
        from trainer import registry
        from trainer.train import NotEnoughDataError, train

        a = self.args
        policy = serving_policy(a.model, lib)
        try:
            for r in range(1, a.rounds + 1):
                if r == 1 and source in self.results.get("_r1", {}):
                    collect = self.results["_r1"][source]
                else:
                    episodes, seconds = await self.collect(source, ARITH, policy, lib, r)
                    collect = self.collect_record(episodes, source, seconds)
                self.say(f"{source} r{r}: train {a.method} {a.steps} step(s)", total=a.steps)
                t1 = time.perf_counter()
                overrides: dict[str, Any] = {"report_to": [], "save_steps": 1000}
                if a.method.startswith("grpo"):
                    overrides.update(max_completion_length=a.max_tokens)
                try:
                    mv = await asyncio.to_thread(
                        train, lib, a.method, steps=a.steps, env=ARITH, overrides=overrides,
                        progress=lambda step, total, logs: self.progress.update(self.bar, completed=step, total=total))
                except NotEnoughDataError as e:
                    tr = {"skipped": str(e), "seconds": time.perf_counter() - t1, "steps": 0}
                    self.print(f"{source} r{r}: training skipped — {e}")
                else:
                    registry.promote(lib, mv.id, note=f"bench.self_reward round {r}")
                    await asyncio.to_thread(policy.set_adapter, mv.id, mv.adapter_path)
                    tr = {"seconds": time.perf_counter() - t1, "steps": int(mv.metrics.get("steps", a.steps)),
                          "rows": int(mv.metrics.get("train_rows", 0)),
                          "loss": mv.metrics.get("train_loss")}
                ev = await self.evaluate(policy)
                rec = {"round": r, "version": policy.version, "collect": collect, "train": tr, "eval": ev}
                self.results["train"][source]["rounds"].append(rec)
                save_results(self.path, self.results)
                self.print(f"{source} round {r}: {policy.version} | pseudo {collect['mean_self_reward']:.2f} "
                           f"(true {collect['true_success']:.0%}) | held-out {ev['acc']:.0%} | "
                           f"collect {collect['seconds']:.0f}s train {tr['seconds']:.0f}s eval {ev['seconds']:.0f}s")
        finally:
            await policy.aclose()

    async def run(self) -> None:
        from agent.policy import load_policy
        from agent.serving import open_library

        ws = self.args.workspace
        libs = {s: open_library(ws / s) for s, _ in GAP_SOURCES}
        try:
            base = load_policy(self.args.model)
            try:
                self.results.setdefault("train", {})
                await self.gap(base, libs)
                self.results["base_eval"] = await self.evaluate(base)
                b = self.results["base_eval"]
                self.print(f"base held-out: {b['acc']:.0%} ({b['k']}/{b['n']})")
                save_results(self.path, self.results)
            finally:
                await base.aclose()
            for source in TRAIN_SOURCES:
                self.results["train"].setdefault(source, {"rounds": []})
                await self.train_source(source, libs[source])
        finally:
            for lib in libs.values():
                lib.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="Smoke check: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    ap.add_argument("--model", default="default")
    ap.add_argument("--episodes", type=int, help="Episodes per source (part a) and per round (part b).")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--steps", type=int, help="Optimizer steps per round.")
    ap.add_argument("--eval-n", type=int)
    ap.add_argument("--max-tokens", type=int)
    ap.add_argument("--method", default="sft", choices=("sft", "grpo"))
    ap.add_argument("--workspace", type=Path, default=ROOT / "bench" / "out" / "self_reward")
    ap.add_argument("--threads", type=int, help="torch CPU threads.")
    ap.add_argument("--doc", type=Path, default=DOC, help="Markdown to write; the plot goes to <doc dir>/img/.")
    ap.add_argument("--report-only", action="store_true", help="Only re-render the doc from <workspace>/results.json.")
    ap.add_argument("--plain", action="store_true", help="Plain progress lines instead of a rich bar.")
    args = ap.parse_args(argv)
    for k, v in (QUICK if args.quick else FULL).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


class _PlainProgress:
    """Enough of rich.progress.Progress for the harness, printing one line per phase."""

    class _Console:
        @staticmethod
        def print(text: str) -> None:
            print(text, flush=True)

    console = _Console()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *_: Any, **__: Any) -> int:
        return 0

    def update(self, _: int, description: str | None = None, **__: Any) -> None:
        if description:
            print(f"[{time.strftime('%H:%M:%S')}] {description}", flush=True)

    def advance(self, _: int) -> None:
        return None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    path = args.workspace / "results.json"
    if args.report_only:
        print("wrote", write_report(json.loads(path.read_text()), args.doc))
        return
    if args.workspace.exists() and any(args.workspace.iterdir()):
        raise SystemExit(f"{args.workspace} is not empty: pass another --workspace (each source needs a fresh library)")
    command = "python -m bench.self_reward " + " ".join(sys.argv[1:] if argv is None else argv)
    results: dict[str, Any] = {"settings": {
        "model": args.model, "episodes": args.episodes, "rounds": args.rounds, "steps": args.steps,
        "eval_n": args.eval_n, "max_tokens": args.max_tokens, "method": args.method, "quick": args.quick,
        "command": command, "results_path": str(path)}}
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.plain or not sys.stdout.isatty():
        progress = _PlainProgress()
    else:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn())
    start = time.perf_counter()
    with progress:
        asyncio.run(Harness(args, results, path, progress).run())
    results["wall_seconds"] = time.perf_counter() - start
    results.pop("_r1", None)
    save_results(path, results)
    print(gap_table(results))
    print(train_table(results))
    print("wrote", write_report(results, args.doc), "and", path)


if __name__ == "__main__":
    main()
