"""Synthetic episodes on real ``arithmetic`` tasks, for smoke tests and benchmarks (never the main path).

Like :func:`trainer.models.make_tiny_model`, this lives in the package so benchmarks and tests build the
same data without importing each other. Every episode follows the record invariant of
:mod:`memory.records` (the retry's input is ``reflect.messages + [assistant: reflection] + [retry
instruction]``) and its feedback is the real verifier's verdict on the text.

    python -m bench.micro.train        # reflection datasets from mixed_episodes(4)
"""

from __future__ import annotations

from environments import Task, get_environment
from memory.records import Attempt, Episode, ModelCall

ENV = "arithmetic"
RETRY_INSTRUCTION = "Using your reflection, try again. Give the final number inside <answer></answer> tags."
REFLECT_INSTRUCTION = "Your answer was wrong. Reflect briefly on what went wrong."


def tasks(n: int, seed: int = 0) -> list[Task]:
    """``n`` train-split ``arithmetic`` tasks."""
    return get_environment(ENV).sample(n, split="train", seed=seed)


def correct_text(task: Task) -> str:
    return f"The result is <answer>{task.reference['value']}</answer>"


def wrong_text(task: Task) -> str:
    return f"The result is <answer>{task.reference['value'] + 1}</answer>"


def _attempt(index: int, messages: list[dict[str, str]], task: Task, success: bool) -> Attempt:
    text = correct_text(task) if success else wrong_text(task)
    fb = get_environment(ENV).verify(task, text)
    if fb.success != success:
        raise RuntimeError(f"the arithmetic verifier judged {text!r} {fb.success}, expected {success}")
    return Attempt(index=index, solve=ModelCall(node="solve" if index == 0 else "retry", messages=messages, output=text),
                   answer=fb.answer, feedback=fb)


def make_episode(
    task: Task,
    first_success: bool = False,
    reflection: str | None = "I added wrong; recompute carefully.",
    retry_success: bool | None = True,
) -> Episode:
    """First attempt; if it failed and ``reflection`` is given, a reflection and (unless
    ``retry_success`` is None) one retry that succeeds or fails."""
    first = _attempt(0, task.messages(), task, first_success)
    attempts = [first]
    if not first_success and reflection is not None:
        reflect_messages = [
            *task.messages(),
            {"role": "assistant", "content": first.solve.output},
            {"role": "user", "content": f"{first.feedback.message}\n{REFLECT_INSTRUCTION}"},
        ]
        first.reflect = ModelCall(node="reflect", messages=reflect_messages, output=reflection)
        if retry_success is not None:
            retry_messages = [
                *reflect_messages,
                {"role": "assistant", "content": reflection},
                {"role": "user", "content": RETRY_INSTRUCTION},
            ]
            attempts.append(_attempt(1, retry_messages, task, retry_success))
    return Episode(env=task.env, task=task, attempts=attempts)


def single_attempt_episode(env_spec: str, task: Task, text: str) -> Episode:
    """One first attempt answering ``text``, verified by ``env_spec`` (no reflection, no retry)."""
    fb = get_environment(env_spec).verify(task, text)
    return Episode(env=task.env, task=task, attempts=[
        Attempt(index=0, solve=ModelCall(node="solve", messages=task.messages(), output=text), answer=fb.answer,
                feedback=fb)])


def mixed_episodes(n_tasks: int = 4, seed: int = 0) -> list[Episode]:
    """Per task: one first-try success, one recovered (good reflection), one unrecovered (bad reflection)."""
    out: list[Episode] = []
    for t in tasks(n_tasks, seed):
        out.append(make_episode(t, first_success=True))
        out.append(make_episode(t, reflection="Good: I should add the digits again.", retry_success=True))
        out.append(make_episode(t, reflection="Bad: numbers are hard.", retry_success=False))
    return out
