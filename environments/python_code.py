"""``python_code``: write a Python function from a one-sentence spec; hidden tests judge it, in the sandbox.

    selfevolve envs sample python_code -n 2
    selfevolve envs sample python_code:suite=humaneval --split eval -n 1
    selfevolve run --env python_code --episodes 8

A task names a function and its parameters, states what it returns and shows one example call. Its
``num_tests`` hidden cases (inputs drawn from a RNG seeded by the question, so a question always has the
same tests; never the example) and their expected values stay in ``task.reference`` under keys that
start with ``_`` (``_cases``, ``_expected``), which the trainer's STaR hint leaves out: a hint listing
the hidden tests would let a lookup table pass and be trained on. ``check`` sends
only the *inputs* into the sandbox (:func:`environments.sandbox.call_function`), gets back the returned
values as plain data and compares them here: nothing the code does inside can make a wrong value right.

Feedback names the first failing case only: its input, the expected and the returned value, or the
exception's last line, or that it timed out/crashed — never the whole hidden test set. ``partial_credit``
rewards the share of tests passed (success still needs all). ``suite=humaneval`` is an eval-only variant
on the 147 of HumanEval's 164 problems whose tests are literal (:mod:`environments.humaneval`).
"""

from __future__ import annotations

import hashlib
import random
import re
import textwrap
from typing import Any, Literal

from pydantic import Field, model_validator

from . import code_tasks, humaneval
from .base import EnvConfig, Environment, Feedback, Split, Task, tag_spans
from .registry import register_environment
from .sandbox import CallReport, SandboxLimits, call_function
from .sandbox._codec import decode, encode, same

MAX_CODE = 20_000
_CODE_START = re.compile(r"^(?:def |class |import |from |@|[A-Za-z_]\w*[ \t]*=[^=])", re.M)


class PythonCodeConfig(EnvConfig):
    suite: Literal["procedural", "humaneval"] = Field(
        default="procedural", description="procedural: generated specs at levels; humaneval: HumanEval's problems (eval only)."
    )
    min_level: int = Field(default=1, ge=1, le=5, description="Easiest problem level (1 one expression ... 5 small algorithms).")
    max_level: int = Field(default=3, ge=1, le=5, description="Hardest problem level (default 1-3: the 135M model's band).")
    num_tests: int = Field(default=8, ge=1, le=50, description="Hidden test cases per procedural task.")
    partial_credit: bool = Field(default=False, description="Reward the share of tests passed (success still needs all).")
    memory_mb: int = Field(default=256, ge=64, le=8192, description="Address space of the sandboxed process.")
    check_timeout_s: float = Field(default=5.0, gt=0.0, le=600.0, description="Wall-clock seconds for all tests of one answer.")

    @model_validator(mode="after")
    def _levels(self) -> PythonCodeConfig:
        if self.min_level > self.max_level:
            raise ValueError(f"min_level={self.min_level} is above max_level={self.max_level}; swap them")
        return self


def extract_code(text: str) -> str | None:
    """The code of a response: the last ``<answer>`` span, else the last fenced block (preferring, in
    both, the last that defines a function: models often add a usage example after it), else the lines
    from the first ``def``/``import``/assignment; fences inside a span are unwrapped and prose before
    the code is dropped.

    >>> extract_code("Sure!\\n<answer>```python\\ndef f(x):\\n    return x\\n```</answer>")
    'def f(x):\\n    return x'
    >>> extract_code("Here it is:\\ndef f(x):\\n    return x\\nThis returns x.")
    'def f(x):\\n    return x'
    """
    body = _last_code(tag_spans(text, "answer"))
    if body is None:
        body = _last_code(text.split("```")[1::2])  # odd pieces are inside fences (linear, however many)
    if body is None:
        start = _CODE_START.search(text)
        if start is None:
            return None
        body = _code_lines(text[start.start():])
    if "```" in body:
        inner = [f for f in body.split("```")[1::2] if f.strip()]
        body = inner[-1] if inner else body.replace("```", "")
    body = re.sub(r"^(?:python|py)[ \t]*\n", "", body.lstrip("\n"))
    start = _CODE_START.search(body)
    if start is not None and all(_is_prose(line) for line in body[: start.start()].splitlines() if line.strip()):
        body = body[start.start():]
    return body.strip("\n").rstrip() or None


def _is_prose(line: str) -> bool:
    """A line of prose before the code ("Here is the function:"), not code (a constant, a comment)."""
    return not line[:1].isspace() and not line.startswith(("#", '"', "'")) and not any(c in line for c in "=()[]{}")


def _last_code(pieces: list[str]) -> str | None:
    """The last piece that defines something (a usage example after the function is not the answer),
    else the last non-empty one."""
    pieces = [p for p in pieces if p.strip()]
    return next((p for p in reversed(pieces) if "def " in p), pieces[-1] if pieces else None)


def _code_lines(text: str) -> str:
    """The leading lines of ``text`` that look like code: indented, blank, or starting a definition."""
    kept = []
    for line in text.splitlines():
        if line and not line[0].isspace() and not _CODE_START.match(line) and not line.startswith("#"):
            break
        kept.append(line)
    return "\n".join(kept)


def _show(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _call(entry: str, args: tuple[Any, ...] | list[Any]) -> str:
    return f"{entry}({', '.join(_show(a, 120) for a in args)})"


@register_environment("python_code")
class PythonCode(Environment):
    """Write a Python function from a spec; hidden tests run it in the sandbox."""

    config_class = PythonCodeConfig
    checks_out_of_process = True
    system_prompt = "You are a helpful assistant that writes correct, simple Python code."
    answer_instruction = "Write the complete Python function and put the code inside <answer></answer> tags, as <answer>YOUR CODE</answer>."

    # ----- tasks -----
    def generate(self, rng: random.Random) -> tuple[str, dict[str, Any], float]:
        if self.config.suite == "humaneval":
            return self._humaneval_task(rng.choice(humaneval.load_problems()))
        family = rng.choice(code_tasks.families(self.config.min_level, self.config.max_level))
        consts = family.consts(rng)
        example = family.draw(rng)
        spec = family.spec.format(**consts)
        result = family.solve(*example, **consts)
        question = (f"Write a Python function `{family.name}({family.params})` that {spec}.\n\n"
                    f"Example: {_call(family.name, example)} returns {_show(result)}.")
        tests = random.Random(hashlib.sha256(question.encode()).digest())
        cases: list[tuple[Any, ...]] = []
        for _ in range(self.config.num_tests * 20):
            args = family.draw(tests)
            if repr(args) != repr(example) and (len(cases) < 2 or repr(args) not in map(repr, cases)):
                cases.append(args)
            if len(cases) == self.config.num_tests:
                break
        expected = [family.solve(*args, **consts) for args in cases]
        reference = {"entry": family.name, "family": family.name, "_cases": [encode(list(a)) for a in cases],
                     "_expected": [encode(e) for e in expected]}
        return question, reference, float(family.level)

    def _humaneval_task(self, problem: humaneval.Problem) -> tuple[str, dict[str, Any], float]:
        question = f"Complete this Python function ({problem.task_id}):\n\n```python\n{problem.prompt.strip()}\n```"
        reference = {
            "entry": problem.entry, "task_id": problem.task_id, "prompt": problem.prompt,
            "_cases": [encode(list(c.args)) for c in problem.cases], "_expected": [encode(c.expected) for c in problem.cases],
            "_modes": [[c.mode, c.tol] for c in problem.cases],
        }
        return question, reference, 0.0

    def split_of(self, question: str) -> Split:
        return "eval" if self.config.suite == "humaneval" else super().split_of(question)

    def sample(self, n: int, split: Split = "train", seed: int = 0) -> list[Task]:
        if self.config.suite != "humaneval":
            return super().sample(n, split, seed)
        if split != "eval":  # RuntimeError like the base class's "this split is empty"
            raise RuntimeError("python_code:suite=humaneval is eval-only (a held-out benchmark): use --split eval")
        problems = list(humaneval.load_problems())
        if n > len(problems):
            raise RuntimeError(f"HumanEval has {len(problems)} usable problems; asked for {n}")
        random.Random(f"{self.spec}:{seed}").shuffle(problems)
        return [self.make_task(*self._humaneval_task(p), "eval") for p in problems[:n]]

    # ----- answers -----
    def extract_answer(self, text: str) -> str | None:
        return extract_code(text or "")

    def missing_answer_message(self, text: str) -> str:
        if not (text or "").strip():
            return "The response was empty. " + self.answer_instruction
        return "No Python code was found in the response. " + self.answer_instruction

    def check(self, task: Task, answer: str) -> Feedback:
        if len(answer) > MAX_CODE:
            return Feedback.failure(f"The code is {len(answer)} characters long; keep it under {MAX_CODE}.", answer=answer)
        return self.judge(task, answer, self.run_tests(task, answer))

    def limits(self) -> SandboxLimits:
        cfg = self.config
        return SandboxLimits(wall_s=cfg.check_timeout_s, cpu_s=max(1, int(cfg.check_timeout_s)), memory_mb=cfg.memory_mb)

    def run_tests(self, task: Task, answer: str, limits: SandboxLimits | None = None) -> CallReport:
        """Call the answer's function on the task's hidden inputs in the sandbox (expected values stay here)."""
        cases = [decode(c) for c in task.reference["_cases"]]
        return call_function(self._source(task, answer), task.reference["entry"], cases, limits or self.limits())

    def judge(self, task: Task, answer: str, report: CallReport) -> Feedback:
        """Compare what came back with the expected values; name the first failing case."""
        ref = task.reference
        cases = [decode(c) for c in ref["_cases"]]
        modes = ref.get("_modes") or [["same", 0.0]] * len(cases)
        passed, first = 0, None
        for i, (args, expected, (mode, tol)) in enumerate(zip(cases, map(decode, ref["_expected"]), modes, strict=True)):
            outcome = report.outcomes[i]
            if outcome is None:
                problem = report.why_missing(i)
            elif outcome.error is not None:
                problem = f"raised {outcome.error}"
            elif _passes(outcome.value, expected, mode, tol):
                passed += 1
                continue
            else:
                problem = f"returned {_show(outcome.value)}, expected {_show(expected)}"
            first = first or f"Test {i + 1} of {len(cases)} failed: {_call(ref['entry'], args)} {problem}."
            if outcome is None:
                break  # nothing after a missing case ran either
        if first is None:
            return Feedback.correct(answer, message=f"All {len(cases)} tests passed.")
        if report.load_error:
            first = f"The code failed before any test ran: {report.load_error}."
        reward = 0.5 * passed / len(cases) if self.config.partial_credit else 0.0
        return Feedback.failure(first, answer=answer, reward=reward)

    def _source(self, task: Task, answer: str) -> str:
        """The code to run: for HumanEval, the prompt's imports first; a bare body gets the prompt's signature."""
        prompt = task.reference.get("prompt")
        if prompt is None:
            return answer
        imports = "\n".join(line for line in prompt.splitlines() if line.startswith(("import ", "from ")))
        if f"def {task.reference['entry']}" not in answer:
            answer = prompt + (answer if answer.startswith((" ", "\t")) else textwrap.indent(answer, "    "))
        return f"{imports}\n{answer}" if imports else answer


def _passes(got: Any, expected: Any, mode: str, tol: float) -> bool:
    """HumanEval's own comparisons (on plain decoded values), or :func:`same` for procedural tasks."""
    if mode == "same":
        return same(got, expected)
    if mode == "close":
        return type(got) in (int, float) and abs(got - expected) < tol
    if mode == "truthy":
        return bool(got)
    if mode == "falsy":
        return not got
    return got == expected
