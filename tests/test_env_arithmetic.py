import pytest

from environments import get_environment
from environments.arithmetic import _evaluate, parse_int


def test_deterministic_by_seed():
    env = get_environment("arithmetic:digits=2,terms=3,operators=+-*")
    assert env.sample(20, seed=3) == env.sample(20, seed=3)
    assert [t.question for t in env.sample(20, seed=3)] != [t.question for t in env.sample(20, seed=4)]


def test_train_and_eval_disjoint():
    env = get_environment("arithmetic:digits=2")
    train = {t.question for t in env.sample(300, "train", seed=0)}
    evals = {t.question for t in env.sample(100, "eval", seed=0)}
    assert train and evals and not train & evals


def test_right_answer_scores_one_and_wrong_zero():
    env = get_environment("arithmetic:digits=2,terms=3,operators=+-*")
    for task in env.sample(10, seed=1):
        value = task.reference["value"]
        ok = env.verify(task, f"Let me compute. <answer>{value}</answer>")
        assert ok.success and ok.reward == 1.0
        bad = env.verify(task, f"<answer>{value + 1}</answer>")
        assert not bad.success and bad.reward == 0.0
        assert str(value) not in bad.message.split(":")[0]  # the feedback must not leak the answer


@pytest.mark.parametrize(
    "text, fragment",
    [("", "empty"), ("I do not know", "No final answer"), ("<answer>seven</answer>", "not a single integer"),
     ("<answer>3 or 4</answer>", "not a single integer"), ("<answer>12", "never closed")],
)
def test_malformed_answers_are_feedback_not_errors(text, fragment):
    env = get_environment("arithmetic:answer_format=strict")
    fb = env.verify(env.sample(1)[0], text)
    assert not fb.success and fragment in fb.message


def test_lenient_reads_last_integer_strict_needs_tags():
    lenient, strict = get_environment("arithmetic"), get_environment("arithmetic:answer_format=strict")
    task = lenient.sample(1)[0]
    text = f"{task.reference['expression']} = {task.reference['value']}"
    assert lenient.verify(task, text).success
    assert not strict.verify(task, text).success


def test_precedence_and_parse_int():
    assert _evaluate([2, 3, 4], ["+", "*"]) == 14
    assert _evaluate([2, 3, 4], ["-", "*"]) == -10
    assert _evaluate([10, 3, 2], ["-", "-"]) == 5
    assert parse_int("= 1,024.") == 1024 and parse_int("-5") == -5 and parse_int("x") is None


def test_bad_options_name_the_field():
    with pytest.raises(ValueError, match="operators"):
        get_environment("arithmetic:operators=/")
    with pytest.raises(ValueError, match="Valid options"):
        get_environment("arithmetic:colour=red")
