"""``countdown``: the R3 paper's equation writing (arXiv 2505.24726, after TinyZero).

Given numbers and a target, write an arithmetic expression that uses each given number at most once
and evaluates to the target. Every generated task has a known solution (the target is built from a
random expression over the numbers). The model's text is parsed with :mod:`ast` into a tree of
``+ - * /`` over integer literals and evaluated with exact fractions — it is never ``eval``-ed.

    selfevolve envs sample countdown -n 2
"""

from __future__ import annotations

import ast
import random
from collections import Counter
from fractions import Fraction
from typing import Any

from pydantic import Field, model_validator

from .base import EnvConfig, Environment, Feedback, Task
from .registry import register_environment


class CountdownConfig(EnvConfig):
    min_numbers: int = Field(default=3, ge=2, le=6)
    max_numbers: int = Field(default=4, ge=2, le=6)
    max_number: int = Field(default=99, ge=2, le=1000, description="Numbers are drawn from 1..max_number.")
    max_target: int = Field(default=1000, ge=1, description="Targets stay within 1..max_target.")
    partial_credit: bool = Field(
        default=False,
        description="If true, a valid expression over allowed numbers earns 0.1 + 0.4*closeness (success stays False).",
    )

    @model_validator(mode="after")
    def _range(self) -> CountdownConfig:
        if self.min_numbers > self.max_numbers:
            raise ValueError("min_numbers must be <= max_numbers")
        return self


class ExpressionError(ValueError):
    """The model's expression is not a valid countdown expression (the message says why)."""


_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


def evaluate_expression(text: str, max_len: int = 200) -> tuple[Fraction, list[int]]:
    """Parse ``text`` as ``+ - * /`` over integers; return (exact value, integers used).

    >>> evaluate_expression("(3 + 5) * 2")
    (Fraction(16, 1), [3, 5, 2])
    """
    if len(text) > max_len:
        raise ExpressionError(f"the expression is longer than {max_len} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise ExpressionError(f"{text!r} is not a valid arithmetic expression") from None
    used: list[int] = []

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Add):
                return left + right
            if isinstance(node.op, ast.Sub):
                return left - right
            if isinstance(node.op, ast.Mult):
                return left * right
            if right == 0:
                raise ExpressionError("the expression divides by zero")
            return left / right
        if isinstance(node, ast.Constant) and type(node.value) is int:
            used.append(node.value)
            return Fraction(node.value)
        if isinstance(node, ast.Constant):
            raise ExpressionError(f"only whole numbers are allowed, found {node.value!r}")
        if isinstance(node, ast.UnaryOp):
            raise ExpressionError("unary signs are not allowed; use only the given numbers and + - * /")
        raise ExpressionError(f"only numbers, + - * / and parentheses are allowed (found {type(node).__name__})")

    return walk(tree.body), used


@register_environment("countdown")
class Countdown(Environment):
    """Write an equation from given numbers (each at most once) that equals the target."""

    config_class = CountdownConfig
    system_prompt = "You are a helpful assistant that writes arithmetic equations."
    answer_instruction = (
        "Use + - * / and parentheses; each given number at most once. "
        "Give only the expression inside <answer></answer> tags."
    )

    def generate(self, rng: random.Random) -> tuple[str, dict[str, Any], float]:
        cfg = self.config
        while True:
            count = rng.randint(cfg.min_numbers, cfg.max_numbers)
            nums = [rng.randint(1, cfg.max_number) for _ in range(count)]
            used = nums[: rng.randint(2, count)]
            expr = str(used[0])
            value = Fraction(used[0])
            for n in used[1:]:
                op = rng.choice("+-*/")
                if op == "/" and (n == 0 or (value / n).denominator != 1):
                    op = "+"
                expr = f"({expr} {op} {n})" if op in "+-" else f"{expr} {op} {n}"
                value = {"+": value + n, "-": value - n, "*": value * n, "/": value / n}[op]
            if value.denominator == 1 and 1 <= value <= cfg.max_target:
                break
        expr = expr[1:-1] if expr.startswith("(") and expr.endswith(")") and _balanced(expr[1:-1]) else expr
        question = f"Using the numbers {nums}, create an equation that equals {int(value)}."
        return question, {"numbers": nums, "target": int(value), "solution": expr}, float(count + len(used))

    def extract_answer(self, text: str) -> str | None:
        answer = super().extract_answer(text)
        if answer is not None and "=" in answer:  # "1 + 2 = 3" -> "1 + 2"
            answer = answer.split("=")[0].strip() or None
        return answer

    def check(self, task: Task, answer: str) -> Feedback:
        numbers, target = task.reference["numbers"], task.reference["target"]
        try:
            value, used = evaluate_expression(answer)
        except ExpressionError as e:
            return Feedback.failure(f"Invalid expression: {e}.", answer=answer)
        over = Counter(used) - Counter(numbers)
        if over:
            n = next(iter(over))
            why = f"{n} is not one of the numbers" if n not in numbers else f"{n} is used more often than it is given"
            return Feedback.failure(f"The expression is not allowed: {why} {numbers}.", answer=answer)
        if value == target:
            return Feedback.correct(answer)
        shown = str(value) if value.denominator == 1 else f"{float(value):.4g}"
        reward = 0.0
        if self.config.partial_credit:
            reward = 0.1 + 0.4 * max(0.0, 1.0 - abs(float(value) - target) / max(target, 1))
        return Feedback.failure(f"The expression evaluates to {shown}, not the target {target}.", answer, reward)


def _balanced(s: str) -> bool:
    depth = 0
    for ch in s:
        depth += (ch == "(") - (ch == ")")
        if depth < 0:
            return False
    return depth == 0
