"""docs/reflection.md from the study's files alone: bands, recovery per arm, paired comparisons, findings.

Hand-written findings live in ``docs/reflection_notes.md`` and are rendered in verbatim (so a re-report
never loses them); every number in the tables is recomputed here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from bench._report import git_rev, machine
from trainer.gate import wilson

from .arms import ARM_TEXT
from .config import ARMS
from .failures import failures_of, load_first
from .records import env_dir
from .stats import ArmStats, Paired, successes_matrix
from .study import load_samples

COMPARISONS = [("a", "c"), ("e", "c"), ("e", "a"), ("b", "c"), ("a", "b"), ("d", "e"), ("d", "a"),
               ("a", "a_bare"), ("b", "b_bare"), ("e", "e_bare")]


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ci(ci: tuple[float, float]) -> str:
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def env_results(out: Path, spec: str, k: int, n: int) -> dict:
    where = env_dir(out, spec)
    first = load_first(where / "first.jsonl")
    failures = failures_of(first, n)
    mats, hints = {}, None
    for arm in ARMS:
        samples = load_samples(where / f"{arm}.jsonl")
        if not samples:
            continue
        try:
            mats[arm] = successes_matrix(((s.failure, s.j, s.success) for s in samples), len(failures), k)
        except ValueError:
            continue  # an arm still running: left out of the tables until it finishes
        if arm == "d":
            per = {s.failure: s.hints for s in samples}
            hints = (float(np.mean(list(per.values()))), float(np.mean([h > 0 for h in per.values()])))
    return {"spec": spec, "first": first, "failures": failures, "mats": mats, "hints": hints}


def _bands_table(results: list[dict]) -> list[str]:
    lines = ["| env | first attempts | first-try accuracy (95% CI) | failures studied |", "|---|---:|---:|---:|"]
    for r in results:
        drawn = r["first"][: r["first"].index(r["failures"][-1]) + 1] if r["failures"] else r["first"]
        ok = sum(f.success for f in drawn)
        lo, hi = wilson(ok, len(drawn))
        lines.append(f"| `{r['spec']}` | {len(drawn)} | {_pct(ok / max(len(drawn), 1))} {_ci((lo, hi))} | "
                     f"{len(r['failures'])} |")
    return lines


def _arm_table(r: dict, k: int) -> list[str]:
    lines = [f"### `{r['spec']}` — {len(r['failures'])} failures × {k} samples", "",
             f"| arm | what the second attempt sees | recovery (95% CI) | recovered by ≥ 1 of {k} | "
             "R3 groups with varying reward |", "|---|---|---:|---:|---:|"]
    for arm, m in r["mats"].items():
        s = ArmStats.of(arm, m)
        lines.append(f"| {arm} | {ARM_TEXT[arm]} | {_pct(s.recovery)} {_ci(s.ci)} | {_pct(s.any_of_k)} | "
                     f"{_pct(s.varying_groups)} |")
    if r["hints"] is not None:
        lines += ["", f"Arm d's retrieval: {r['hints'][0]:.2f} hints per failure on average; "
                      f"{_pct(r['hints'][1])} of failures got at least one."]
    return lines


def _paired_table(results: list[dict]) -> list[str]:
    lines = ["| env | comparison | difference in recovery (95% CI) | p (sign-flip, two-sided) |", "|---|---|---:|---:|"]
    silent = [r["spec"] for r in results if r["mats"] and not any(m.sum() for m in r["mats"].values())]
    for r in results:
        if r["spec"] in silent:
            continue
        for x, y in COMPARISONS:
            if x in r["mats"] and y in r["mats"]:
                p = Paired.of(x, r["mats"][x], y, r["mats"][y])
                diff = f"{100 * p.diff:+.1f} pts [{100 * p.ci[0]:+.1f}, {100 * p.ci[1]:+.1f}]"
                lines.append(f"| `{r['spec']}` | {x} − {y} | {diff} | {p.p:.3g} |")
    if silent:
        lines += ["", "Left out: " + ", ".join(f"`{s}`" for s in silent) + " — no second attempt of any arm succeeded, "
                  "so every difference there is exactly 0."]
    return lines


def _planted_section(out: Path) -> list[str]:
    path = out / "planted.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    lines = ["## An example value in the instruction (before) vs a placeholder-free one (after)", "",
             f"Same {data['n']} held-out tasks per row, one attempt each under either instruction; exact McNemar on "
             f"the discordant tasks. `copied` = answers equal to the planted example. Command: "
             f"`python -m bench.experiments.reflection planted --out {out} -n {data['n']}`.", "",
             "| env | T | metric | before | after | only after / only before | p |", "|---|---:|---|---:|---:|---:|---:|"]
    for row in data["summary"]:
        for metric in ("lenient", "strict", "copied"):
            m = row[metric]
            if metric == "strict" and not row["spec"].startswith("arithmetic"):
                continue
            lines.append(f"| `{row['spec']}` | {row['temperature']:.1f} | {metric} | {_pct(m['before'])} | "
                         f"{_pct(m['after'])} | {m['only_after']} / {m['only_before']} | {m['p']:.3g} |")
    return [*lines, ""]


def _retrieval_section(out: Path) -> list[str]:
    path = out / "retrieval.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    libs = "; ".join(f"{k}: {v['successes']} successes of {v['episodes']}" for k, v in data["library"].items())
    lines = ["## Memory retrieval, no weight update", "",
             f"First try through the episode graph with retrieval off vs on, the same {data['n']} held-out tasks; the "
             f"libraries hold the base model's attempts at {data['train']} train tasks ({libs}). Command: "
             f"`python -m bench.experiments.reflection retrieval --out {out} --spec {data['spec']} -n {data['n']} "
             f"--train {data['train']}`.", "",
             "| env | T | retrieval of | without | with | only with / only without | p | tasks shown a hint |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in data["rows"]:
        what = r["comparison"].removeprefix("retrieval of ")
        lines.append(f"| `{r['env']}` | {r['temperature']:.1f} | {what} | {_pct(r['without'])} | {_pct(r['with'])} | "
                     f"{r['only_with']} / {r['only_without']} | {r['p']:.3g} | {_pct(r['hinted_share'])} |")
    return [*lines, ""]


def _study_section(out: Path, title: str) -> list[str]:
    """Bands, recovery per arm and paired comparisons of one ``--out`` directory (one set of settings)."""
    settings = json.loads((out / "settings.json").read_text())
    envs = json.loads((out / "envs.json").read_text()) if (out / "envs.json").exists() else []
    k, n = settings["k"], settings["failures"]
    results = [env_results(out, spec, k, n) for spec in envs]
    parts = [
        f"## {title}", "",
        f"_Model:_ `{settings['model']}`; up to {n} failures per env, k = {k} second attempts per failure at temperature "
        f"{settings['temperature']}, top-p {settings['top_p']}; {settings['solve_tokens']} tokens per answer, "
        f"{settings['reflect_tokens']} per reflection; held-out tasks of seed {settings['seed']}.  ",
        f"_Command:_ `python -m bench.experiments.reflection run --model {settings['model']} --out {out} --failures {n} --k {k} --envs "
        + " ".join(f"'{e}'" for e in envs) + _arms_option(results) + "`", "",
        "### Bands and failures", "", *_bands_table(results), "",
        "### Recovery by arm", "",
        "Recovery = share of second attempts that succeed, over failures × samples; the CI resamples failures. "
        "A group's reward varies when some but not all of its k second attempts succeed — only those R3 "
        "groups carry a gradient.", "",
    ]
    for r in results:
        parts += [*_arm_table(r, k), ""]
    return [*parts, "### Paired comparisons (same failures)", "", *_paired_table(results), ""]


def _arms_option(results: list[dict]) -> str:
    """`` --arms ...`` when the study ran fewer than all arms (so its command reproduces it), else ``""``."""
    ran = sorted({arm for r in results for arm in r["mats"]}, key=ARMS.index)
    return "" if not ran or ran == list(ARMS) else " --arms " + " ".join(ran)


def write_report(outs: Path | list[Path], doc: Path, notes: Path | None = None) -> Path:
    """``docs/reflection.md`` from one or more study directories (each its own settings), planted and
    retrieval results from the first that has them, and the hand-written notes beside ``doc``."""
    outs = [outs] if isinstance(outs, Path) else list(outs)
    notes = notes or doc.with_name("reflection_notes.md")
    parts = [
        "# The reflection ablation: what turns a failed first attempt into a success?", "",
        "Generated by `python -m bench.experiments.reflection report` from the study's files; findings at the end "
        "are hand-written (docs/reflection_notes.md). Arms and statistics are defined in "
        "`bench/experiments/reflection/__init__.py`.", "",
        f"_Machine:_ {machine()}; _when:_ {time.strftime('%Y-%m-%d', time.gmtime())}, commit {git_rev()}.  ",
        "_Report command:_ `python -m bench.experiments.reflection report "
        + " ".join(f"--out {o}" for o in outs) + "`", "",
    ]
    for i, out in enumerate(outs):
        k = json.loads((out / "settings.json").read_text())["k"]
        parts += _study_section(out, f"Study {i + 1}: `{out}` (k = {k})")
    for section in (_planted_section, _retrieval_section):
        parts += next((lines for lines in (section(o) for o in outs) if lines), [])
    if notes.exists():
        parts += ["## Findings", "", notes.read_text().strip(), ""]
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(parts))
    return doc
