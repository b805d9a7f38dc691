"""Stage 1: one sampled first attempt per held-out task until an env has ``failures`` failed ones.

The task list is ``unique_eval_tasks(env, max_draws, seed)`` — a pure function of the env spec and seed —
walked in order, so a resumed run continues exactly where it stopped and every arm sees the same failures.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from agent.evaluate import unique_eval_tasks
from agent.policy import Policy, SamplingParams
from environments import BARE_FEEDBACK, Environment

from .config import StudyConfig
from .records import FirstAttempt, append, read

CHUNK = 64


def load_first(path: Path) -> list[FirstAttempt]:
    return [FirstAttempt(**row) for row in read(path)]


def failures_of(first: list[FirstAttempt], n: int) -> list[FirstAttempt]:
    return [f for f in first if not f.success][:n]


async def collect_first(policy: Policy, env: Environment, cfg: StudyConfig, path: Path,
                        progress: Callable[[int, int], None] | None = None) -> list[FirstAttempt]:
    """First attempts (appended to ``path``) until ``cfg.failures`` of them failed or the draws run out."""
    done = load_first(path)
    params = SamplingParams(max_tokens=cfg.solve_tokens, temperature=cfg.temperature, top_p=cfg.top_p)
    while len(failures_of(done, cfg.failures)) < cfg.failures and len(done) < cfg.max_draws:
        need = cfg.failures - len(failures_of(done, cfg.failures))
        want = min(cfg.max_draws, len(done) + max(8, min(CHUNK, need * 2)))
        # unique_eval_tasks(n) is the first n distinct held-out tasks of one fixed sequence: a prefix of (n + 1)'s
        chunk = unique_eval_tasks(env, want, seed=cfg.seed)[len(done):]
        if not chunk:
            break  # the eval split has no more distinct tasks
        completions = await policy.generate([t.messages() for t in chunk], params)
        rows = []
        for i, (task, c) in enumerate(zip(chunk, completions, strict=True)):
            fb = env.verify(task, c.text)
            rows.append(FirstAttempt(
                draw=len(done) + i, task=task.model_dump(mode="json"), output=c.text, success=fb.success,
                feedback=fb.message, bare_feedback=fb.message if fb.success else BARE_FEEDBACK, answer=fb.answer,
                completion_tokens=c.completion_tokens,
            ))
        append(path, [r.to_row() for r in rows])
        done.extend(rows)
        if progress:
            progress(len(failures_of(done, cfg.failures)), len(done))
    return done
