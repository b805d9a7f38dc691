"""open_ended: deterministic rubric tasks; the code checks score only the checkable items."""

import doctest

import pytest

import environments.open_ended as open_ended
from environments import get_environment
from environments.open_ended import CHECKS, run_check


@pytest.fixture()
def env():
    return get_environment("open_ended")


def with_rubric(env, rubric):
    return env.sample(1)[0].model_copy(update={"reference": {"rubric": rubric}})


def test_doctests():
    result = doctest.testmod(open_ended)
    assert result.attempted > 0 and result.failed == 0


def test_deterministic_by_seed(env):
    assert env.sample(10, seed=3) == env.sample(10, seed=3)
    assert [t.question for t in env.sample(10, seed=3)] != [t.question for t in env.sample(10, seed=4)]


def test_train_and_eval_disjoint(env):
    train = {t.question for t in env.sample(200, "train", seed=0)}
    evals = {t.question for t in env.sample(50, "eval", seed=0)}
    assert train and evals and not train & evals


@pytest.mark.parametrize("checkable, free_form", [(1, 1), (2, 2), (5, 4)])
def test_rubric_shape_follows_the_knobs(checkable, free_form):
    env = get_environment(f"open_ended:checkable_items={checkable},free_form_items={free_form}")
    for task in env.sample(20, seed=1):
        rubric = task.reference["rubric"]
        checks = [i for i in rubric if "check" in i]
        assert len(checks) == checkable and len(rubric) == checkable + free_form
        assert any(i["points"] > 0 for i in checks)  # always something to meet
        assert all(i["check"]["name"] in CHECKS for i in checks)
        assert all(isinstance(i["criterion"], str) and -10 <= i["points"] <= 10 for i in rubric)
        assert "<answer>" not in task.prompt[-1].content


def test_some_items_are_negative():
    env = get_environment("open_ended:checkable_items=4,free_form_items=4")
    points = [i["points"] for t in env.sample(30, seed=0) for i in t.reference["rubric"]]
    assert min(points) < 0 < max(points)


@pytest.mark.parametrize(
    "check, right, wrong",
    [
        ({"name": "max_words", "n": 5}, "one two three four five", "one two three four five six"),
        ({"name": "min_words", "n": 3}, "one two three", "one two"),
        ({"name": "max_sentences", "n": 2}, "First one. Second one!", "One. Two. Three."),
        ({"name": "bullet_count", "n": 3}, "- a\n- b\n- c", "- a\n- b"),
        ({"name": "contains_word", "word": "every"}, "Every day counts.", "Everyone counts."),
        ({"name": "contains_text", "text": ","}, "a, b", "a b"),
        ({"name": "starts_with", "text": "In short"}, "in short, yes", "Yes, in short"),
        ({"name": "ends_with", "text": "The end."}, "A story. The end.", "The end. A story."),
        ({"name": "all_lowercase"}, "all quiet here", "All quiet here"),
    ],
)
def test_each_check_right_and_wrong(check, right, wrong):
    assert run_check(check, right) is True
    assert run_check(check, wrong) is False


def test_unknown_check_is_a_bug_not_feedback():
    with pytest.raises(KeyError, match="unknown rubric check"):
        run_check({"name": "rhymes"}, "text")


RUBRIC = [
    {"criterion": "Is a poem about rain.", "points": 5},  # free-form: ignored by the verifier
    {"criterion": "Uses at most 6 words.", "points": 4, "check": {"name": "max_words", "n": 6}},
    {"criterion": "Includes the word 'grey'.", "points": 2, "check": {"name": "contains_word", "word": "grey"}},
    {"criterion": "Uses the forbidden word 'wet'.", "points": -3, "check": {"name": "contains_word", "word": "wet"}},
]


def test_check_scores_only_checkable_items(env):
    task = with_rubric(env, RUBRIC)
    ok = env.verify(task, "  grey drops on the roof \n")
    assert ok.success and ok.reward == 1.0 and ok.answer == "grey drops on the roof"
    missed = env.verify(task, "soft drops on the roof")
    assert not missed.success and missed.reward == pytest.approx(4 / 6)
    assert "Includes the word 'grey'" in missed.message and "Uses at most" not in missed.message
    broken = env.verify(task, "grey and wet")
    assert not broken.success and broken.reward == pytest.approx((4 + 2 - 3) / 6)
    assert "Broken rules" in broken.message and "wet" in broken.message


def test_empty_response_is_feedback(env):
    fb = env.verify(env.sample(1)[0], "   ")
    assert not fb.success and fb.answer is None and "empty" in fb.message


def test_bad_options_name_the_field():
    with pytest.raises(ValueError, match="checkable_items"):
        get_environment("open_ended:checkable_items=0")
