"""Rendering of the self-reward experiment's results: markdown tables, findings text, the doc and the plot.

Pure functions of the results dict (``write_plot``/``write_report`` also write files); no model.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.experiments.common import mcnemar_p
from bench.experiments.self_reward.metrics import collapse_points, version_series
from bench.experiments.self_reward.settings import TEMPERATURE


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
    return f"""# Self-reward vs ground truth (`bench/experiments/self_reward`)

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
