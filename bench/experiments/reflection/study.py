"""Run the study: per env, first attempts → failures → (library, hints) → every arm, chunk by chunk.

Everything is appended to ``--out`` as it is generated, so ``run`` after a kill picks up at the next
unfinished chunk (an arm's chunk is the unit of work: ``CHUNK`` failures × k samples).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agent.policy import Policy, load_policy
from environments import get_environment

from . import arms as A
from .config import StudyConfig, check_resume
from .failures import collect_first, failures_of
from .hints import fill_library, hints_for, open_library
from .records import Sample, append, env_dir, read
from .stats import recovery, successes_matrix

CHUNK = 16


def load_samples(path: Path) -> list[Sample]:
    return [Sample(**row) for row in read(path)]


def winner_design(done: dict[str, list[Sample]], n: int, k: int) -> str:
    """The retry design (conversation = arm a, fresh = arm e) with the higher recovery on this env."""
    rate = {arm: recovery(successes_matrix(((s.failure, s.j, s.success) for s in done[arm]), n, k)) for arm in ("a", "e")}
    return "fresh" if rate["e"] >= rate["a"] else "conversation"


async def run_env(policy: Policy, spec: str, cfg: StudyConfig, out: Path, progress: Progress) -> None:
    env = get_environment(spec)
    where = env_dir(out, spec)
    bar = progress.add_task(f"{spec}: first attempts", total=cfg.failures)
    first = await collect_first(policy, env, cfg, where / "first.jsonl",
                                progress=lambda nf, _: progress.update(bar, completed=nf))
    failures = failures_of(first, cfg.failures)
    if len(failures) < cfg.failures:
        progress.console.print(f"[yellow]{spec}: only {len(failures)} failures in {len(first)} draws[/]")
    ctx = A.ArmContext(policy=policy, env=env, cfg=cfg, failures=failures)
    for arm in cfg.arms:
        path = where / f"{arm}.jsonl"
        samples = load_samples(path)
        ctx.done[arm] = samples
        if arm == "d":
            ctx.d_design = winner_design(ctx.done, len(failures), cfg.k)  # type: ignore[assignment]
            if not ctx.hints:
                lib = open_library(where / "library")
                try:
                    await fill_library(lib, policy, env, cfg)
                    ctx.hints = hints_for(lib, env, failures, cfg.hints_k)
                finally:
                    lib.close()
        have = {s.failure for s in samples if s.j == cfg.k - 1}
        todo = [i for i in range(len(failures)) if i not in have]
        progress.update(bar, description=f"{spec}: arm {arm}", total=len(failures), completed=len(have))
        for start in range(0, len(todo), CHUNK):
            ctx.index = todo[start:start + CHUNK]
            new = await A.run_arm(arm, ctx)
            append(path, [s.to_row() for s in new])
            samples.extend(new)
            progress.update(bar, advance=len(ctx.index))
    progress.update(bar, description=f"{spec}: done")


async def run_study(cfg: StudyConfig, out: Path, policy: Policy | None = None) -> None:
    check_resume(out, cfg)
    listed = out / "envs.json"
    known = json.loads(listed.read_text()) if listed.exists() else []
    listed.write_text(json.dumps([*known, *(s for s in cfg.envs if s not in known)], indent=1))
    own = policy is None
    policy = policy or load_policy(cfg.model)
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with progress:
            for spec in cfg.envs:
                await run_env(policy, spec, cfg, out, progress)
    finally:
        if own:
            await policy.aclose()


def run(cfg: StudyConfig, out: Path) -> None:
    asyncio.run(run_study(cfg, out))
