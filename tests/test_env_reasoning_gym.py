"""reasoning_gym:<task>: determinism, scoring through reasoning-gym's scorer, errors, spec round trip."""

from __future__ import annotations

import json

import pytest

from environments import Task, get_environment

pytest.importorskip("reasoning_gym")

TASKS = ["leg_counting", "basic_arithmetic", "letter_counting"]


@pytest.fixture(scope="module", params=TASKS)
def env(request):
    return get_environment(f"reasoning_gym:{request.param}")


def test_deterministic_by_seed(env):
    a = env.sample(5, seed=1)
    assert a == env.sample(5, seed=1)
    assert [t.question for t in a] != [t.question for t in env.sample(5, seed=2)]


def test_train_and_eval_disjoint(env):
    train = {t.question for t in env.sample(100, "train", seed=0)}
    evals = env.sample(30, "eval", seed=0)
    assert all(t.split == "eval" for t in evals)
    assert not train & {t.question for t in evals}


def test_reference_scores_one_and_wrong_answer_zero(env):
    for task in env.sample(5, seed=0):
        ok = env.verify(task, f"Thinking... <answer>{task.reference['answer']}</answer>")
        assert (ok.reward, ok.success) == (1.0, True), ok.message
        bad = env.verify(task, f"<answer>{int(task.reference['answer']) + 1}</answer>")
        assert bad.success is False and bad.reward == 0.0
        assert "not correct" in bad.message
        nonsense = env.verify(task, "<answer>definitely not it</answer>")  # some scorers give partial credit
        assert nonsense.success is False and nonsense.reward < 1.0
        missing = env.verify(task, "")
        assert missing.success is False and "empty" in missing.message


def test_tasks_are_json_serialisable_and_rebuild(env):
    task = env.sample(1, seed=0)[0]
    again = Task.model_validate(json.loads(task.model_dump_json()))
    assert env.verify(again, f"<answer>{task.reference['answer']}</answer>").success


def test_spec_round_trip(env):
    assert get_environment(env.spec).sample(3, seed=4) == env.sample(3, seed=4)


def test_spec_round_trip_with_dataset_options():
    env = get_environment("reasoning_gym:basic_arithmetic,min_terms=2,max_terms=3,dataset_seed=7")
    assert env.config.options == {"min_terms": 2, "max_terms": 3}
    assert env.spec == "reasoning_gym:basic_arithmetic,dataset_seed=7,max_terms=3,min_terms=2"
    assert get_environment(env.spec).sample(3, seed=0) == env.sample(3, seed=0)
    same = get_environment(
        "reasoning_gym:basic_arithmetic", dataset_seed=7, options={"min_terms": 2, "max_terms": 3}
    )
    assert same.spec == env.spec


def test_different_dataset_seed_gives_different_tasks():
    a = get_environment("reasoning_gym:leg_counting").sample(3, seed=0)
    b = get_environment("reasoning_gym:leg_counting,dataset_seed=1").sample(3, seed=0)
    assert [t.question for t in a] != [t.question for t in b]


def test_unknown_task_names_close_matches():
    with pytest.raises(ValueError, match=r"unknown reasoning-gym task 'leg_count'.*leg_counting"):
        get_environment("reasoning_gym:leg_count")
    with pytest.raises(ValueError, match="letter_counting"):
        get_environment("reasoning_gym:leter_counting")


def test_bad_dataset_options_fail_at_construction():
    with pytest.raises(ValueError, match="nonsense"):
        get_environment("reasoning_gym:basic_arithmetic,nonsense=1")
    with pytest.raises(ValueError, match="max_terms"):
        get_environment("reasoning_gym:basic_arithmetic,min_terms=5,max_terms=2")
