from fractions import Fraction

import pytest

from environments import get_environment
from environments.countdown import ExpressionError, evaluate_expression


@pytest.fixture(scope="module")
def env():
    return get_environment("countdown")


def test_deterministic_and_disjoint(env):
    assert env.sample(10, seed=5) == env.sample(10, seed=5)
    train = {t.question for t in env.sample(200, "train")}
    evals = {t.question for t in env.sample(50, "eval")}
    assert not train & evals


def test_reference_solution_is_correct(env):
    for task in env.sample(50, seed=2):
        fb = env.verify(task, f"<answer>{task.reference['solution']}</answer>")
        assert fb.success, (task.question, task.reference, fb.message)


def test_wrong_answers(env):
    task = env.sample(1, seed=0)[0]
    nums, target = task.reference["numbers"], task.reference["target"]
    fb = env.verify(task, f"<answer>{nums[0]} + {nums[0]} + {nums[0]}</answer>")
    assert not fb.success and ("more often" in fb.message or "evaluates" in fb.message)
    fb = env.verify(task, "<answer>1000003</answer>")
    assert not fb.success and "not one of the numbers" in fb.message
    fb = env.verify(task, f"<answer>{nums[0]}</answer>")
    assert fb.success == (nums[0] == target)
    assert env.verify(task, "<answer>__import__('os')</answer>").message.startswith("Invalid expression")
    assert "divides by zero" in env.verify(task, f"<answer>{nums[0]} / ({nums[1]} - {nums[1]})</answer>").message
    assert not env.verify(task, "no tags at all").success


def test_equation_form_and_partial_credit():
    env = get_environment("countdown:partial_credit=true")
    task = env.sample(1, seed=1)[0]
    sol, target = task.reference["solution"], task.reference["target"]
    assert env.verify(task, f"<answer>{sol} = {target}</answer>").success
    near = env.verify(task, f"<answer>{task.reference['numbers'][0]}</answer>")
    if not near.success:
        assert 0.1 <= near.reward < 0.5


def test_safe_parser():
    assert evaluate_expression("(3 + 5) * 2 / 4") == (Fraction(4), [3, 5, 2, 4])
    for bad in ["2 ** 10", "-3 + 4", "1.5 + 2", "abs(3)", "x + 1", "3 +", "9" * 300]:
        with pytest.raises(ExpressionError):
            evaluate_expression(bad)
