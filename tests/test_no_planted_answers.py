"""No instruction the model sees holds an example answer value, and feedback never gives the answer away.

The 135M model copies a concrete example from its instructions: with "e.g. <answer>42</answer>" in every
arithmetic prompt, 3 of 6 failures of a demo run answered 42 (issue 15). So the instruction around each
question, the system prompts, the tool schemas and the agent's own prompts may show the format only with
empty tags or placeholders. A failed answer's feedback says why it failed without the right answer.
"""

from __future__ import annotations

import json
import random
import re

import pytest

from agent import prompts
from agent.feedback.sources import RUBRIC_GRADE
from environments import BARE_FEEDBACK, get_environment

SPECS = [
    "arithmetic", "arithmetic:answer_format=strict", "arithmetic:digits=2,terms=3,operators=+-*",
    "countdown", "function_calling", "open_ended", "reasoning_gym:leg_counting",
]
_TAG_SPAN = re.compile(r"<(answer|tool_call)>(.*?)</\1>", re.DOTALL | re.IGNORECASE)
_PLACEHOLDER = re.compile(r"^\s*(\.\.\.|…|<[^<>]*>|[A-Za-z ]*)\s*$")  # empty, "...", "<value>", "your number"


def planted(text: str) -> list[str]:
    """Concrete example values in ``text``: 'e.g.' examples, and tag spans holding more than a placeholder.

    >>> planted("Give it inside <answer></answer> tags."), planted("e.g. <answer>42</answer>")
    ([], ['e.g.', '42'])
    """
    found = ["e.g."] if re.search(r"\be\.g\.|for example", text, re.IGNORECASE) else []
    found += [inner.strip() for _, inner in _TAG_SPAN.findall(text) if not _PLACEHOLDER.match(inner) or re.search(r"\d", inner)]
    return found


def instruction_parts(spec: str) -> list[str]:
    """Everything in a task's prompt that is not the question itself (system prompt, format instruction)."""
    env = get_environment(spec)
    parts: list[str] = []
    for task in env.sample(8, seed=3):
        for message in task.prompt:
            content = message.content
            if message.role == "user" and content.startswith(task.question):
                content = content[len(task.question):]
            parts.append(content)
    return parts


@pytest.mark.parametrize("spec", SPECS)
def test_instructions_hold_no_example_answer(spec: str) -> None:
    for part in instruction_parts(spec):
        assert planted(part) == [], f"{spec}: {part!r}"


def test_tool_schemas_hold_no_example_values() -> None:
    """The schemas are part of the function_calling question: 'City name, e.g. Paris.' plants Paris."""
    for task in get_environment("function_calling").sample(32, seed=1):
        schemas = task.question.split("<tools>")[1].split("</tools>")[0]
        assert planted(schemas) == [], schemas


def test_agent_prompts_hold_no_example_answer() -> None:
    texts = [prompts.CRITIQUE, prompts.REFLECT, prompts.RETRY, prompts.HINTS_HEADER, RUBRIC_GRADE]
    for text in texts:
        assert planted(text) == [], text


def _numbers(text: str) -> set[int]:
    return {int(n) for n in re.findall(r"-?\d+", text)}


def test_arithmetic_feedback_never_gives_the_value() -> None:
    env = get_environment("arithmetic:digits=2,terms=3,operators=+-*")
    rng = random.Random(0)
    for task in env.sample(64, seed=5):
        value = task.reference["value"]
        wrong = value + rng.choice([-1, 1]) * rng.randint(1, 50)
        fb = env.verify(task, f"<answer>{wrong}</answer>")
        assert not fb.success and _numbers(fb.message) == {wrong}, fb.message
        assert ("too high" in fb.message) == (wrong > value)


def test_countdown_feedback_never_gives_a_solution() -> None:
    env = get_environment("countdown")
    for task in env.sample(32, seed=2):
        numbers = task.reference["numbers"]
        for answer in (" + ".join(map(str, numbers)), f"{numbers[0]} * 1000", "(1 + ", "7 / 0"):
            fb = env.verify(task, f"<answer>{answer}</answer>")
            if fb.success:
                continue
            assert task.reference["solution"] not in fb.message, fb.message


def test_function_calling_feedback_never_gives_an_expected_value() -> None:
    env = get_environment("function_calling")
    for task in env.sample(64, seed=4):
        ref = task.reference
        for param, value in ref["arguments"].items():
            wrong = dict(ref["arguments"], **{param: "zzz-not-it" if isinstance(value, str) else -987654})
            call = json.dumps({"name": ref["name"], "arguments": wrong})
            fb = env.verify(task, f"<tool_call>{call}</tool_call>")
            assert not fb.success
            if isinstance(value, str):
                assert f"'{value}'" not in fb.message and f'"{value}"' not in fb.message, fb.message
            elif isinstance(value, int | float) and not isinstance(value, bool):
                assert value not in _numbers(fb.message), fb.message


@pytest.mark.parametrize("spec", ["arithmetic", "countdown", "function_calling", "reasoning_gym:leg_counting"])
def test_bare_feedback_says_only_that_it_failed(spec: str) -> None:
    env = get_environment(f"{spec},feedback_detail=bare" if ":" in spec else f"{spec}:feedback_detail=bare")
    task = env.sample(1, seed=0)[0]
    for text in ("no answer here", "<answer>-12345</answer>", '<tool_call>{"name": "x"}</tool_call>'):
        fb = env.verify(task, text)
        assert not fb.success and fb.message == BARE_FEEDBACK
