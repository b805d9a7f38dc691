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


def test_untagged_credit_shapes_reward_but_not_success():
    env = get_environment("arithmetic:answer_format=strict,untagged_credit=0.5")
    task = env.sample(1)[0]
    value = task.reference["value"]
    untagged = env.verify(task, f"{task.reference['expression']} = {value}")
    assert untagged.reward == 0.5 and not untagged.success and "<answer>" in untagged.message
    wrong = env.verify(task, f"{task.reference['expression']} = {value + 1}")
    assert wrong.reward == 0.0 and not wrong.success
    tagged = env.verify(task, f"<answer>{value}</answer>")
    assert tagged.reward == 1.0 and tagged.success
    assert env.verify(task, f"<answer>{value + 1}</answer> (it is {value})").reward == 0.0  # a wrong tagged answer earns nothing
    # the plain strict env is unchanged: 0 for the untagged right number
    assert get_environment("arithmetic:answer_format=strict").verify(task, str(value)).reward == 0.0


def test_untagged_credit_needs_strict_and_a_sane_value():
    with pytest.raises(ValueError, match="answer_format=strict"):
        get_environment("arithmetic:untagged_credit=0.5")
    with pytest.raises(ValueError, match="untagged_credit"):
        get_environment("arithmetic:answer_format=strict,untagged_credit=1")


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


def test_reformat_tags_the_last_number_in_place_and_only_in_strict_mode():
    strict, lenient = get_environment("arithmetic:answer_format=strict"), get_environment("arithmetic")
    task = strict.sample(1)[0]
    value = task.reference["value"]
    fixed = strict.reformat(task, f"{task.reference['expression']} = {value}. Done")
    assert fixed == f"{task.reference['expression']} = <answer>{value}</answer>. Done"
    assert strict.verify(task, fixed).success
    wrong = strict.reformat(task, f"It is {value + 1}")
    assert wrong == f"It is <answer>{value + 1}</answer>" and not strict.verify(task, wrong).success  # form, not content
    assert strict.reformat(task, "no number here") is None
    assert strict.reformat(task, f"<answer>{value + 1}</answer>") is None  # already tagged: nothing to repair
    assert lenient.reformat(task, f"= {value}") is None  # lenient reads untagged numbers already
