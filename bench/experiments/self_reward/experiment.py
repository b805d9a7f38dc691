"""Self-reward vs ground truth on the embedded model, and self-reward vs verifier training at equal compute.

    python -m bench.experiments.self_reward --quick          # smoke check (minutes)
    python -m bench.experiments.self_reward                  # defaults: 32 episodes, 2 rounds, 4 steps, eval 32
    python -m bench.experiments.self_reward --episodes 16 --rounds 2 --steps 2 --eval-n 16 --max-tokens 48

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

from bench.experiments.common import generation_overrides, save_results
from bench.experiments.self_reward.metrics import gap_metrics, judged_pairs
from bench.experiments.self_reward.progress import make_progress
from bench.experiments.self_reward.report import gap_table, train_table, write_report
from bench.experiments.self_reward.settings import (
    ARITH,
    EVAL_SEED,
    FULL,
    GAP_SOURCES,
    OPEN,
    QUICK,
    SEED,
    TEMPERATURE,
    TRAIN_SOURCES,
)
from trainer.gate import wilson

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "self_reward_results.md"


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
        from agent.cycle import collect
        from memory.records import Run

        env = self.envs[env_spec]
        run_id = f"round-{r}"
        lib.start_run(Run(id=run_id, kind="run", env=env_spec, model_version=policy.version,
                          config={"round": r, "feedback": source}))
        self.say(f"{source} r{r}: collect {self.args.episodes} on {env_spec} ({policy.version})", total=self.args.episodes)
        t0 = time.perf_counter()
        episodes, summary = await collect(policy, [(env, self.tasks(env_spec, r))], self.config(), library=lib,
                                          feedback=source, run_id=run_id, concurrency=16, on_episode=self.tick,
                                          metadata={"origin": "self_reward_bench", "round": r})
        seconds = time.perf_counter() - t0
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
        from agent.cycle import HeldOut, evaluate_version

        n = self.args.eval_n
        self.say(f"eval {policy.version} on {ARITH}", total=n)
        held = HeldOut.each([self.envs[ARITH]], n, seed=EVAL_SEED, max_attempts=1, max_tokens=self.args.max_tokens,
                            concurrency=32)
        res = (await evaluate_version(policy, held, on_episode=self.tick)).results[ARITH]
        k = sum(res.first)
        lo, hi = wilson(k, len(res.first))
        return {"acc": res.first_try_accuracy, "k": k, "n": len(res.first), "lo": lo, "hi": hi,
                "seconds": res.seconds, "outcomes": res.first}

    async def train_source(self, source: str, lib) -> None:
        from agent.serving import serving_policy

        a = self.args
        policy = serving_policy(a.model, lib)
        try:
            for r in range(1, a.rounds + 1):
                if r == 1 and source in self.results.get("_r1", {}):
                    collected = self.results["_r1"][source]
                else:
                    episodes, seconds = await self.collect(source, ARITH, policy, lib, r)
                    collected = self.collect_record(episodes, source, seconds)
                tr = await self.train_round(source, r, lib, policy)
                ev = await self.evaluate(policy)
                rec = {"round": r, "version": policy.version, "collect": collected, "train": tr, "eval": ev}
                self.results["train"][source]["rounds"].append(rec)
                save_results(self.path, self.results)
                self.print(f"{source} round {r}: {policy.version} | pseudo {collected['mean_self_reward']:.2f} "
                           f"(true {collected['true_success']:.0%}) | held-out {ev['acc']:.0%} | "
                           f"collect {collected['seconds']:.0f}s train {tr['seconds']:.0f}s eval {ev['seconds']:.0f}s")
        finally:
            await policy.aclose()

    async def train_round(self, source: str, r: int, lib, policy) -> dict[str, Any]:
        """Train the round's steps on this source's library and promote the result unconditionally."""
        from agent.cycle import Skipped, promote, train_candidate

        a = self.args
        self.say(f"{source} r{r}: train {a.method} {a.steps} step(s)", total=a.steps)
        t1 = time.perf_counter()
        overrides: dict[str, Any] = {"report_to": [], "save_steps": 1000, **generation_overrides(a.method, a.max_tokens)}
        result = await train_candidate(
            lib, a.method, steps=a.steps, env=ARITH, overrides=overrides,
            progress=lambda step, total, logs: self.progress.update(self.bar, completed=step, total=total))
        if isinstance(result, Skipped):
            self.print(f"{source} r{r}: training skipped — {result.reason}")
            return {"skipped": result.reason, "seconds": time.perf_counter() - t1, "steps": 0}
        await promote(lib, policy, result.id, note=f"bench.experiments.self_reward round {r}")
        return {"seconds": time.perf_counter() - t1, "steps": int(result.metrics.get("steps", a.steps)),
                "rows": int(result.metrics.get("train_rows", 0)), "loss": result.metrics.get("train_loss")}

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
    command = "python -m bench.experiments.self_reward " + " ".join(sys.argv[1:] if argv is None else argv)
    results: dict[str, Any] = {"settings": {
        "model": args.model, "episodes": args.episodes, "rounds": args.rounds, "steps": args.steps,
        "eval_n": args.eval_n, "max_tokens": args.max_tokens, "method": args.method, "quick": args.quick,
        "command": command, "results_path": str(path)}}
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    progress = make_progress(plain=args.plain or not sys.stdout.isatty())
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
