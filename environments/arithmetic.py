"""``arithmetic``: integer expressions with a difficulty knob.

The knob (``terms``, ``digits``, ``operators``) exists so there is a band where a small model is
right 20–60% of the time — the band where self-improvement has a signal. Measured on the embedded
SmolLM2-135M: single-digit two-term sums are right ~46% of the time read leniently, 0% when the exact
``<answer>`` format is required (``answer_format="strict"``; greedy, 32 held-out tasks; ~9% of its
samples at temperature 0.7 use the tags at all).

``untagged_credit`` (strict only) shapes the *reward* for RL without changing what counts as a success:
the right number written without tags earns that partial reward, so GRPO has a gradient toward the
format where a bare 0/1 strict reward is almost always zero.

    selfevolve envs sample arithmetic:digits=2,terms=3,operators=+- -n 3
"""

from __future__ import annotations

import random
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import EnvConfig, Environment, Feedback, Task
from .registry import register_environment

_INT = re.compile(r"-?\d[\d,]*")


class ArithmeticConfig(EnvConfig):
    terms: int = Field(default=2, ge=2, le=8, description="Number of operands.")
    digits: int = Field(default=1, ge=1, le=6, description="Digits per operand.")
    operators: str = Field(default="+", description="Operators to draw from, any of '+-*'.")
    answer_format: Literal["lenient", "strict"] = Field(
        default="lenient",
        description="strict: only an integer inside <answer></answer> counts; lenient: else the last integer in the text.",
    )

    untagged_credit: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="strict only: reward (not success) for the right number written without <answer> tags.",
    )

    @model_validator(mode="after")
    def _credit_needs_strict(self) -> ArithmeticConfig:
        if self.untagged_credit and self.answer_format != "strict":
            raise ValueError(
                f"untagged_credit={self.untagged_credit} only applies with answer_format=strict "
                "(lenient already accepts untagged numbers): add answer_format=strict or drop untagged_credit"
            )
        return self

    @field_validator("operators")
    @classmethod
    def _ops(cls, v: str) -> str:
        bad = set(v) - set("+-*")
        if not v or bad:
            raise ValueError(f"operators must be a non-empty string of '+', '-', '*'; got {v!r}")
        return "".join(sorted(set(v), key="+-*".index))


def parse_int(text: str) -> int | None:
    """An integer written plainly ("12", "-3", "1,024", "= 7."); ``None`` if there is none or several.

    >>> parse_int(" = 1,024.")
    1024
    >>> parse_int("3 or 4") is None
    True
    """
    found = _INT.findall(text)
    if len(found) != 1:
        return None
    try:
        return int(found[0].replace(",", ""))
    except ValueError:
        return None


@register_environment("arithmetic")
class Arithmetic(Environment):
    """Integer arithmetic with a difficulty knob (terms, digits, operators)."""

    config_class = ArithmeticConfig
    system_prompt = "You are a helpful assistant that solves arithmetic problems."
    answer_instruction = "Give the final number inside <answer></answer> tags."

    def generate(self, rng: random.Random) -> tuple[str, dict[str, Any], float]:
        cfg = self.config
        lo = 0 if cfg.digits == 1 else 10 ** (cfg.digits - 1)
        hi = 10**cfg.digits - 1
        nums = [rng.randint(lo, hi) for _ in range(cfg.terms)]
        ops = [rng.choice(cfg.operators) for _ in range(cfg.terms - 1)]
        expr = str(nums[0]) + "".join(f" {op} {n}" for op, n in zip(ops, nums[1:], strict=True))
        value = _evaluate(nums, ops)
        difficulty = cfg.terms * cfg.digits + 2 * ops.count("*") + 0.5 * ops.count("-")
        return f"What is {expr}?", {"expression": expr, "value": value}, difficulty

    def extract_answer(self, text: str) -> str | None:
        tagged = super().extract_answer(text)
        if tagged is not None or self.config.answer_format == "strict":
            return tagged
        found = _INT.findall(text or "")
        return found[-1] if found else None

    def verify(self, task: Task, text: str) -> Feedback:
        feedback = super().verify(task, text)
        if self.config.untagged_credit == 0 or feedback.success or feedback.answer is not None:
            return feedback
        fixed = self.reformat(task, text)  # strict and no tagged answer: was the right number there, untagged?
        number = self.extract_answer(fixed) if fixed is not None else None
        if number is not None and self.check(task, number).success:
            return self.with_detail(Feedback.failure(
                f"{number} is the right number, but it is not inside <answer></answer> tags, so it does not count. "
                + self.answer_instruction,
                reward=self.config.untagged_credit,
            ))
        return feedback

    def reformat(self, task: Task, text: str) -> str | None:
        """Strict only: wrap the last integer of an untagged response in ``<answer>`` tags, in place.

        >>> env = Arithmetic(answer_format="strict")
        >>> env.reformat(env.sample(1)[0], "2 + 1 = 3.")
        '2 + 1 = <answer>3</answer>.'
        >>> env.reformat(env.sample(1)[0], "<answer>3</answer>") is None  # already in the format
        True
        """
        if self.config.answer_format != "strict" or self.extract_answer(text) is not None:
            return None
        found = list(_INT.finditer(text or ""))
        if not found:
            return None
        m = found[-1]
        return f"{text[:m.start()]}<answer>{m.group()}</answer>{text[m.end():]}"

    def check(self, task: Task, answer: str) -> Feedback:
        value = parse_int(answer)
        if value is None:
            return Feedback.failure(f"The answer {answer!r} is not a single integer.", answer=answer)
        expected = task.reference["value"]
        if value == expected:
            return Feedback.correct(answer)
        # Informative without giving the answer away: the direction of the error (one bit), never the value.
        return Feedback.failure(f"{value} is wrong: it is too {'high' if value > expected else 'low'}.", answer=answer)


def _evaluate(nums: list[int], ops: list[str]) -> int:
    """Evaluate with the usual precedence (``*`` before ``+``/``-``), without ``eval``."""
    total, product = 0, nums[0]
    sign = 1
    for op, n in zip(ops, nums[1:], strict=True):
        if op == "*":
            product *= n
        else:
            total += sign * product
            sign, product = (1 if op == "+" else -1), n
    return total + sign * product
