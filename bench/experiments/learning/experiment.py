"""Does the agent improve itself? Accuracy of every trained version vs the compute spent, per method.

    python -m bench.experiments.learning --quick     # smoke check: 1 round per method, tiny numbers (minutes)
    python -m bench.experiments.learning             # the experiment (≤ 2 CPU-hours on 2 cores; see docs/learning.md)
    python -m bench.experiments.learning --methods grpo-reflection,memory --rounds 2 --resume

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
  eval answer becomes a hint. Every other method is evaluated without hints, as the cycle does.
- Collection, training, promotion and evaluation are :mod:`agent.cycle`'s (the daemon's and the CLI's).
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

Layout: this module runs the experiment (rounds, CLI, ``main``); the presets and results file (load/resume)
are in :mod:`bench.experiments.learning.results`, the tables, verdict text, statistics and plots in
:mod:`bench.experiments.learning.report`.
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

from bench.experiments.common import generation_overrides, save_results
from bench.experiments.learning.report import cost_estimate, render_doc, table, write_plots
from bench.experiments.learning.results import (
    DEFAULT_ENVS,
    DEFAULT_TRAIN_ENV,
    FULL,
    MEMORY,
    METHODS,
    QUICK,
    add_round,
    load_results,
    round_done,
    totals,
)
from trainer.methods import method_names

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "learning.md"
SEED = 0
EVAL_SEED = 1234


# --------------------------------------------------------------------------- running (needs the model)
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

    async def eval_all(self, policy, hints=None) -> dict[str, Any]:
        """Every eval env, one at a time (a progress line each); ``hints``: the memory method's library."""
        from agent.cycle import HeldOut, evaluate_version

        out = {}
        for spec, env in self.envs.items():
            self.say(f"eval {policy.version} on {spec}", total=self.args.eval_n)
            held = HeldOut.each([env], self.args.eval_n, seed=EVAL_SEED, max_attempts=2,
                                max_tokens=self.args.max_tokens, concurrency=32)
            ev = await evaluate_version(policy, held, hints=hints, on_episode=self.tick)
            out[spec] = _eval_record(ev.results[env.spec])
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
        from agent.cycle import collect
        from agent.graph import EpisodeConfig
        from memory.records import Run

        spec, a = self.args.train_env, self.args
        run_id = f"round-{r}"
        try:
            lib.get_run(run_id)
        except KeyError:
            lib.start_run(Run(id=run_id, kind="run", env=spec, model_version=policy.version, config={"round": r}))
        memory = method == MEMORY
        cfg = EpisodeConfig(max_attempts=2, critique=False, retrieval=memory, temperature=0.7,
                            solve_tokens=a.max_tokens, reflect_tokens=a.max_tokens)
        have = lib.count(run_id=run_id)
        need = a.episodes_per_round - have
        self.say(f"{method} r{r}: collect {need} on {spec} ({policy.version})", total=need)
        t0 = time.perf_counter()
        if need > 0:
            tasks = self.train_env.sample(need, "train", seed=SEED * 1_000_003 + r * 10_007 + have)
            await collect(policy, [(self.train_env, tasks)], cfg, library=lib, run_id=run_id, concurrency=16,
                          metadata={"origin": "learning", "round": r}, on_episode=self.tick)
        eps = lib.episodes(run_id=run_id)
        tokens = sum(e.tokens for e in eps)
        collected = {"episodes": len(eps), "seconds": time.perf_counter() - t0, "tokens": tokens,
                     "first_try_accuracy": sum(e.first_success for e in eps) / max(len(eps), 1),
                     "final_accuracy": sum(e.success for e in eps) / max(len(eps), 1)}
        train_rec: dict[str, Any] = {"steps": 0, "seconds": 0.0}
        version = policy.version
        if not memory:
            version, train_rec = await self.train_round(method, r, lib, policy)
        lib.finish_run(run_id, {"collect": collected})
        evals = await self.eval_all(policy, lib if memory else None)
        return {"round": r, "version": version if not memory else f"memory-r{r}", "collect": collected,
                "train": train_rec, "evals": evals}

    async def train_round(self, method: str, r: int, lib, policy) -> tuple[str, dict[str, Any]]:
        """Train the round's steps and promote the result unconditionally; (served version, train record)."""
        from agent.cycle import Skipped, promote, train_candidate

        a = self.args
        self.say(f"{method} r{r}: train {a.steps_per_round} step(s)", total=a.steps_per_round)
        t1 = time.perf_counter()
        result = await train_candidate(
            lib, method, steps=a.steps_per_round, env=a.train_env, overrides=self.overrides(method), gpu=a.gpu,
            progress=lambda step, total, logs: self.progress.update(self.bar, completed=step, total=total),
        )
        if isinstance(result, Skipped):
            return policy.version, {"steps": 0, "seconds": time.perf_counter() - t1, "skipped": result.reason}
        await promote(lib, policy, result.id, note=f"bench.experiments.learning round {r}")
        return result.id, {"steps": int(result.metrics.get("steps", a.steps_per_round)), "seconds": time.perf_counter() - t1,
                           "metrics": {k: v for k, v in result.metrics.items() if isinstance(v, int | float)}}

    def overrides(self, method: str) -> dict[str, Any]:
        from agent.policy.base import parse_model_spec

        o: dict[str, Any] = {"report_to": [], "save_steps": 1000}
        if self.args.model != "default":
            o["base_model"] = parse_model_spec(self.args.model).path
        if not self.args.gpu:
            o.update(generation_overrides(method, self.args.max_tokens))
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
    ap.add_argument("--notes", type=Path,
                    help="Hand-written findings (markdown) put verbatim into the doc, if the file exists "
                         "(default: learning_notes.md beside --doc, so a smoke run elsewhere gets none).")
    ap.add_argument("--report-only", action="store_true", help="Only re-render the doc from results.json.")
    args = ap.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for k, v in preset.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    known = [*method_names(), MEMORY]
    bad = [m for m in args.methods if m not in known]
    if bad:
        ap.error(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(known)}")
    args.envs = [e.strip() for e in args.envs.split(",") if e.strip()]
    return args


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    return {"model": args.model, "envs": args.envs, "train_env": args.train_env, "methods": args.methods, "rounds": args.rounds,
            "episodes_per_round": args.episodes_per_round, "steps_per_round": args.steps_per_round,
            "eval_n": args.eval_n, "max_tokens": args.max_tokens, "budget_minutes": args.budget_minutes,
            "quick": args.quick, "gpu": args.gpu, "results_path": str(args.workspace / "results.json")}


def write_report(args: argparse.Namespace, results: dict[str, Any], command: str, wall_s: float | None) -> Path:
    from bench._report import git_rev, machine

    plots = write_plots(results, args.doc.parent / "img")
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()) + f", commit {git_rev()}"
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    notes_path = args.notes or args.doc.parent / "learning_notes.md"
    notes = notes_path.read_text() if notes_path.exists() else ""
    args.doc.write_text(render_doc(results, command, plots, machine=machine(), when=when, smoke=args.quick,
                                   estimate=cost_estimate(results, wall_s), notes=notes))
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
    command = "python -m bench.experiments.learning " + " ".join(sys.argv[1:] if argv is None else argv)
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