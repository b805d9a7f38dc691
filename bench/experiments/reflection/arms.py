"""Stage 2: the arms. Each turns the env's failures into ``k`` second attempts per failure.

Every conversation comes from :mod:`agent.prompts` (what the episode graph sends). Arms that reflect
first draw ``k`` reflections per failure (one GRPO group's worth), then one retry per reflection; ``e``
retries on ``a``'s reflections and ``e_bare`` on ``a_bare``'s, so those pairs differ only in what the
retry sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent import prompts
from agent.policy import Policy, SamplingParams
from environments import Environment, Task

from .config import StudyConfig
from .records import FirstAttempt, Sample

ARM_TEXT = {
    "a": "reflect, retry in the same conversation (R3)",
    "b": "retry in the same conversation with the feedback, no reflection",
    "c": "fresh sample of the original prompt, no feedback",
    "d": "reflect + retry with memory hints",
    "e": "reflect, retry in a fresh turn without the failed answer",
    "a_bare": "a with bare feedback",
    "b_bare": "b with bare feedback",
    "e_bare": "e with bare feedback",
}


@dataclass
class ArmContext:
    policy: Policy
    env: Environment
    cfg: StudyConfig
    failures: list[FirstAttempt]
    index: list[int] = field(default_factory=list)  # the failures to attempt now (a chunk, for resumability)
    done: dict[str, list[Sample]] = field(default_factory=dict)  # arms already run (e reads a's reflections)
    hints: list[list[str]] = field(default_factory=list)  # per failure, for arm d
    d_design: prompts.RetryDesign = "fresh"

    def params(self, tokens: int, n: int = 1) -> SamplingParams:
        return SamplingParams(max_tokens=tokens, temperature=self.cfg.temperature, top_p=self.cfg.top_p, n=n)


def _parts(f: FirstAttempt, bare: bool) -> tuple[Task, list[dict[str, str]], str]:
    task = f.task_obj
    return task, task.messages(), f.bare_feedback if bare else f.feedback


def _system(task: Task) -> str | None:
    return task.prompt[0].content if task.prompt and task.prompt[0].role == "system" else None


async def _reflections(ctx: ArmContext, bare: bool, with_hints: bool) -> dict[int, list[str]]:
    chats = []
    for i in ctx.index:
        f = ctx.failures[i]
        _, msgs, fb = _parts(f, bare)
        chats.append(prompts.reflect_messages(msgs, f.output, fb, ctx.hints[i] if with_hints else ()))
    out = await ctx.policy.generate(chats, ctx.params(ctx.cfg.reflect_tokens, n=ctx.cfg.k))
    k = ctx.cfg.k
    return {i: [c.text for c in out[n * k:(n + 1) * k]] for n, i in enumerate(ctx.index)}


def _stored_reflections(samples: list[Sample], index: list[int], k: int) -> dict[int, list[str]]:
    by = {(s.failure, s.j): s.reflection or "" for s in samples}
    missing = [i for i in index if (i, k - 1) not in by]
    if missing:
        raise RuntimeError(f"the reflections of failures {missing[:5]} are not recorded yet")
    return {i: [by[(i, j)] for j in range(k)] for i in index}


async def _retries(ctx: ArmContext, arm: str, design: prompts.RetryDesign, reflections: dict[int, list[str]],
                   bare: bool, with_hints: bool) -> list[Sample]:
    chats, keys = [], []
    for i in ctx.index:
        f = ctx.failures[i]
        task, msgs, fb = _parts(f, bare)
        hints = ctx.hints[i] if with_hints else ()
        reflect_call = prompts.reflect_messages(msgs, f.output, fb, hints)
        for j, r in enumerate(reflections[i]):
            chat, _ = prompts.retry_messages(design, reflect_call, r, question=task.question, system=_system(task),
                                             feedback=fb, answer_instruction=ctx.env.answer_instruction, hints=hints)
            chats.append(chat)
            keys.append((i, j, r, len(hints)))
    out = await ctx.policy.generate(chats, ctx.params(ctx.cfg.solve_tokens))
    return [_judge(ctx, arm, i, j, c.text, c.completion_tokens, reflection=r, hints=h)
            for (i, j, r, h), c in zip(keys, out, strict=True)]


async def _direct(ctx: ArmContext, arm: str, bare: bool, fresh: bool) -> list[Sample]:
    chats = []
    for i in ctx.index:
        f = ctx.failures[i]
        _, msgs, fb = _parts(f, bare)
        chats.append(msgs if fresh else prompts.feedback_retry_messages(msgs, f.output, fb, ctx.env.answer_instruction))
    k = ctx.cfg.k
    out = await ctx.policy.generate(chats, ctx.params(ctx.cfg.solve_tokens, n=k))
    return [_judge(ctx, arm, ctx.index[n // k], n % k, c.text, c.completion_tokens) for n, c in enumerate(out)]


def _judge(ctx: ArmContext, arm: str, i: int, j: int, text: str, tokens: int, reflection: str | None = None,
           hints: int = 0) -> Sample:
    fb = ctx.env.verify(ctx.failures[i].task_obj, text)
    return Sample(failure=i, j=j, arm=arm, output=text, success=fb.success, answer=fb.answer,
                  reflection=reflection, hints=hints, completion_tokens=tokens)


async def run_arm(arm: str, ctx: ArmContext) -> list[Sample]:
    """All ``k`` second attempts of ``arm`` at the failures ``ctx.index``."""
    bare = arm.endswith("_bare")
    base = arm.removesuffix("_bare")
    if base == "b":
        return await _direct(ctx, arm, bare, fresh=False)
    if base == "c":
        return await _direct(ctx, arm, bare, fresh=True)
    if base == "a":
        return await _retries(ctx, arm, "conversation", await _reflections(ctx, bare, False), bare, False)
    if base == "e":
        source = ctx.done.get("a_bare" if bare else "a")
        if source is None:
            raise RuntimeError(f"arm {arm} reuses the reflections of {'a_bare' if bare else 'a'}: run that arm first")
        reflections = _stored_reflections(source, ctx.index, ctx.cfg.k)
        return await _retries(ctx, arm, "fresh", reflections, bare, False)
    if base == "d":
        return await _retries(ctx, arm, ctx.d_design, await _reflections(ctx, bare, True), bare, True)
    raise ValueError(f"unknown arm {arm!r}")
