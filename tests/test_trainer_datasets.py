"""Datasets from synthetic episodes: which rows are kept, and the retry-prompt invariant."""

from __future__ import annotations

import doctest

import pytest

import trainer.datasets as D
from environments import get_environment
from environments.chat import with_system
from trainer.synthetic import correct_text, make_episode, mixed_episodes, single_attempt_episode, tasks

STRICT = "arithmetic:answer_format=strict"


def test_doctests():
    assert doctest.testmod(D).failed == 0


def test_reflection_dataset_keeps_failed_first_attempts_with_reflection_and_retry():
    t = tasks(3)
    eps = [
        make_episode(t[0], first_success=True),                  # dropped: first try right
        make_episode(t[0], reflection=None),                     # dropped: no reflection
        make_episode(t[1], retry_success=None),                  # dropped: no retry recorded
        make_episode(t[1], retry_success=True),                  # kept
        make_episode(t[2], retry_success=False),                 # kept
    ]
    ds = D.reflection_dataset(eps)
    assert len(ds) == 2
    assert ds["episode_id"] == [eps[3].id, eps[4].id]
    assert ds["recorded_retry_success"] == [True, False]
    assert len(D.reflection_dataset(eps, env="countdown")) == 0


def test_retry_prompt_invariant_rebuilds_the_recorded_retry_input():
    eps = mixed_episodes(2)
    ds = D.reflection_dataset(eps)
    by_id = {e.id: e for e in eps}
    for row in ds:
        ep = by_id[row["episode_id"]]
        rebuilt = D.retry_prompt(row["retry_template"], row["retry_slot"], row["recorded_reflection"])
        assert rebuilt == with_system(ep.attempts[1].solve.messages)
        new = D.retry_prompt(row["retry_template"], row["retry_slot"], "NEW")
        assert "NEW" in new[row["retry_slot"][0]]["content"] and row["recorded_reflection"] not in str(new)
        assert row["prompt"][0] == {"role": "system", "content": ep.task.prompt[0].content}


def test_first_attempt_and_sft_datasets():
    eps = mixed_episodes(3)
    fa = D.first_attempt_dataset(eps)
    assert len(fa) == 3  # one row per task
    assert len(D.first_attempt_dataset(eps, unique_tasks=False)) == 9
    sft = D.sft_dataset(eps)
    assert len(sft) == 6  # first-try successes + recovered episodes
    assert all(r["completion"][0]["role"] == "assistant" for r in sft)
    assert set(D.episode_ids(sft)) == {e.id for e in eps if e.success}


def test_dpo_pairs_same_task_conversational():
    eps = mixed_episodes(2)
    ds = D.dpo_dataset(eps)
    kinds = ds["kind"]
    assert kinds.count("reflection") == 2  # one good vs one bad reflection per task
    assert kinds.count("answer") == 8  # (first success, recovered retry) x (2 failed first answers), per task
    for row in ds:
        assert row["chosen"][0]["role"] == "assistant" and row["rejected"][0]["role"] == "assistant"
        assert row["chosen"] != row["rejected"]
    capped = D.dpo_dataset(eps, max_pairs_per_task=1)
    assert len(capped) == 4


def test_rationalize_saves_without_hint():
    t = tasks(2)
    eps = [make_episode(t[0], retry_success=False), make_episode(t[1], retry_success=False)]
    seen = []

    def generate(chats):
        seen.extend(chats)
        return [correct_text(t[0]), "no idea"]

    ds = D.rationalize(eps, generate)
    assert "Hint" in seen[0][-1]["content"]
    assert len(ds) == 1 and "Hint" not in ds[0]["prompt"][-1]["content"]
    assert ds[0]["completion"][0]["content"] == correct_text(t[0])


def test_empty_datasets_keep_their_columns():
    assert D.reflection_dataset([]).column_names == list(D.REFLECTION_COLUMNS)
    assert len(D.dpo_dataset([])) == 0


def test_held_out_episodes_never_become_training_data():
    episodes = mixed_episodes(4)
    n_train = len(D.reflection_dataset(episodes)), len(D.sft_dataset(episodes)), len(D.first_attempt_dataset(episodes))
    assert all(n_train)
    eval_split = [e.model_copy(update={"task": e.task.model_copy(update={"split": "eval"})}) for e in episodes]
    measured = [e.model_copy(update={"purpose": "eval"}) for e in episodes]
    legacy = [type(e).model_validate({**e.model_dump(exclude={"purpose"}), "metadata": {"purpose": "eval"}}) for e in episodes]
    assert all(e.purpose == "eval" for e in legacy)  # stored before `purpose` was a field
    for held_out in (eval_split, measured, legacy):
        assert len(D.reflection_dataset(held_out)) == 0
        assert len(D.sft_dataset(held_out)) == 0
        assert len(D.first_attempt_dataset(held_out)) == 0
        assert len(D.dpo_dataset(held_out)) == 0


def _self_rewarded(ep, source="majority", reliable=(True, True), label="7"):
    """``ep`` as if its feedback came from a self-reward source (pseudo-label ``label``)."""
    attempts = [a.model_copy(update={"feedback": a.feedback.model_copy(update={
        "reliable": reliable[i], "label": label})}) for i, a in enumerate(ep.attempts)]
    return ep.model_copy(update={"feedback_source": source, "attempts": attempts})


def test_unreliable_pseudo_labels_never_become_training_data():
    t = tasks(4)
    ok = _self_rewarded(make_episode(t[0], retry_success=True))
    bad_first = _self_rewarded(make_episode(t[1], retry_success=True), reliable=(False, True))
    bad_retry = _self_rewarded(make_episode(t[2], retry_success=False), reliable=(True, False))
    first_ok = _self_rewarded(make_episode(t[3], first_success=True), reliable=(True,))
    first_bad = _self_rewarded(make_episode(t[3], first_success=True), reliable=(False,))
    eps = [ok, bad_first, bad_retry, first_ok, first_bad]
    refl = D.reflection_dataset(eps)
    assert refl["episode_id"] == [ok.id]
    assert refl["feedback_source"] == ["majority"] and refl["label"] == ["7"]
    fa = D.first_attempt_dataset(eps, unique_tasks=False)
    assert set(fa["episode_id"]) == {ok.id, bad_retry.id, first_ok.id}
    assert set(D.episode_ids(D.sft_dataset(eps))) == {ok.id, bad_first.id, first_ok.id}  # last feedback reliable
    dpo_ids = {i for ids in D.dpo_dataset(eps)["episode_ids"] for i in ids}
    assert bad_first.id not in dpo_ids and first_bad.id not in dpo_ids
    # rationalize: self-reward episodes are never hinted with (or re-verified against) the reference
    calls = []
    assert len(D.rationalize([bad_retry], lambda chats: calls.append(chats) or [])) == 0 and calls == []


def test_verifier_rows_carry_no_label_and_unlabelled_self_reward_rows_are_dropped():
    t = tasks(2)
    plain = make_episode(t[0], retry_success=True)
    rubric = _self_rewarded(make_episode(t[1], retry_success=True), source="rubric", label=None)
    refl = D.reflection_dataset([plain, rubric])
    assert refl["episode_id"] == [plain.id] and refl["feedback_source"] == ["verifier"] and refl["label"] == [None]
    assert len(D.first_attempt_dataset([rubric])) == 0 and D.dropped_unlabelled([plain, rubric]) == 1
    assert len(D.sft_dataset([rubric])) == 1  # sft uses the recorded (reliable) success, no reward needed

    from trainer.train import NotEnoughDataError, build_dataset
    with pytest.raises(NotEnoughDataError, match="no pseudo-label"):
        build_dataset("grpo", [rubric])


def test_sft_reformat_adds_right_but_malformed_first_attempts_only():
    env = get_environment(STRICT)
    t = env.sample(3, "train", seed=5)
    right = single_attempt_episode(STRICT, t[0], f"{t[0].reference['expression']} = {t[0].reference['value']}")
    wrong = single_attempt_episode(STRICT, t[1], f"It is {t[1].reference['value'] + 1}")
    empty = single_attempt_episode(STRICT, t[2], "I am not sure.")
    assert not any(ep.success for ep in (right, wrong, empty))
    assert len(D.sft_dataset([right, wrong, empty])) == 0  # strict successes only by default
    ds = D.sft_dataset([right, wrong, empty], reformat=True)
    assert ds["episode_id"] == [right.id] and ds["kind"] == ["reformatted"]
    completion = ds[0]["completion"][0]["content"]
    assert completion.endswith(f"= <answer>{t[0].reference['value']}</answer>") and env.verify(t[0], completion).success
    assert ds[0]["prompt"] == with_system(t[0].messages())
    # self-reward episodes never consult the verifier through reformat
    majority = right.model_copy(update={"feedback_source": "majority"})
    assert len(D.sft_dataset([majority], reformat=True)) == 0


def test_build_dataset_sft_reformat_switch_and_config_default():
    from trainer.config import config_for
    from trainer.train import NotEnoughDataError, build_dataset

    task = get_environment(STRICT).sample(1, "train", seed=2)[0]
    ep = single_attempt_episode(STRICT, task, f"{task.reference['expression']} = {task.reference['value']}")
    strict = config_for("sft", output_dir="unused", max_steps=1, reformat_answers=False)
    with pytest.raises(NotEnoughDataError, match="no successful episode in any env"):
        build_dataset("sft", [ep], config=strict)
    cfg = config_for("sft", output_dir="unused", max_steps=1)
    assert cfg.reformat_answers is True and cfg.learning_rate == 5e-4
    assert build_dataset("sft", [ep], config=cfg)["kind"] == ["reformatted"]
    assert config_for("sft", output_dir="unused", max_steps=1, reformat_answers=False).reformat_answers is False


def test_fresh_turn_retry_with_a_recorded_slot_and_a_reflection_not_found():
    """A retry of any design is usable when its slot holds the reflection; a record whose retry does not
    hold the reflection where the invariant says is dropped, never trained on a wrong prompt."""
    from agent import prompts

    ep = next(e for e in mixed_episodes(3) if not e.first_success and len(e.attempts) > 1)
    first, retry = ep.attempts[0], ep.attempts[1]
    msgs, slot = prompts.retry_messages("fresh", first.reflect.messages, first.reflect.output, question=ep.task.question,
                                        system=ep.task.prompt[0].content, feedback=first.feedback.message,
                                        answer_instruction="Answer in tags.")
    fresh = ep.model_copy(deep=True)
    fresh.attempts[1].solve = retry.solve.model_copy(update={"messages": msgs, "reflection_slot": slot})
    [row] = D.reflection_dataset([fresh])
    assert D.retry_prompt(row["retry_template"], row["retry_slot"], "xyz")[-1]["content"].count("xyz") == 1
    broken = ep.model_copy(deep=True)
    broken.attempts[1].solve = retry.solve.model_copy(update={"messages": msgs})  # no slot, and not the old shape
    assert len(D.reflection_dataset([broken])) == 0
