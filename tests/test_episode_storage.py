"""Huge and odd model text reaches the library: lone surrogates are stored, huge texts are capped per
field (``EpisodeConfig.max_stored_chars``) with the cut recorded on the attempt; the episode is always kept."""

from __future__ import annotations

import pytest

from agent.graph import EpisodeConfig, GraphDeps
from agent.runner import run_episodes
from environments import get_environment
from memory.records import Attempt, ModelCall, cap_attempt
from tests.scripted import ScriptedPolicy


def _huge_then_surrogate(size: int):
    def rule(node, chat):
        if node == "critique":
            return "VERDICT: CORRECT"
        if node == "reflect":
            return "Shorter next time. \ud800"
        return "<answer>" + "1 + " * (size // 4) + "1</answer>"

    return rule


async def test_a_lone_surrogate_in_a_countdown_answer_is_verified_and_recorded(library):
    env = get_environment("countdown")
    policy = ScriptedPolicy(lambda node, chat: "VERDICT: WRONG" if node == "critique" else "<answer>1 + \ud800</answer>")
    episodes, summary = await run_episodes(env.sample(2), GraphDeps(policy, env, EpisodeConfig(retrieval=False), library))
    assert summary.errors == [] and len(episodes) == 2
    for ep in episodes:
        stored = library.get(ep.id)
        assert stored == ep and not stored.success
        assert stored.attempts[0].solve.output == "<answer>1 + \ufffd</answer>"
        assert "not a valid arithmetic expression" in stored.attempts[0].feedback.message


def test_model_calls_and_feedback_replace_lone_surrogates():
    call = ModelCall(node="solve", messages=[{"role": "user", "content": "q\udfff"}], output="a\ud800")
    assert call.output == "a\ufffd" and call.messages[0]["content"] == "q\ufffd"
    call.model_dump_json()  # UTF-8 encodable, so SQLite can hold it


@pytest.mark.parametrize("design", ["fresh", "conversation"])
async def test_a_huge_answer_is_capped_per_field_and_the_cut_is_recorded(library, design):
    """A 2 MB answer (the issue's was 10 MB) repeated by the feedback loop: every stored text field is at
    most ``max_stored_chars``, the attempt names what was cut and how long it was, the episode is kept."""
    env = get_environment("countdown")
    size, limit = 2_000_000, 10_000
    cfg = EpisodeConfig(retrieval=False, retry_design=design, max_stored_chars=limit)
    episodes, summary = await run_episodes(env.sample(1), GraphDeps(ScriptedPolicy(_huge_then_surrogate(size)), env, cfg, library))
    assert summary.errors == []
    stored = library.get(episodes[0].id)
    assert stored == episodes[0] and len(stored.attempts) == 2
    for attempt in stored.attempts:
        assert attempt.truncated["solve.output"] > size and len(attempt.solve.output) == limit
        assert "critique.messages[2].content" in attempt.truncated
        for call in (attempt.solve, attempt.critique, attempt.reflect):
            if call is not None:
                assert len(call.output) <= limit and all(len(m["content"]) <= limit for m in call.messages)
        assert attempt.answer is None or len(attempt.answer) <= limit
    assert "reflect.messages[2].content" in stored.attempts[0].truncated
    assert len(stored.model_dump_json()) < 30 * limit * 2  # about 20 copies of the 2 MB before
    if design == "conversation":  # the failed answer is in the retry's prompt too
        assert "solve.messages[2].content" in stored.attempts[1].truncated


async def test_the_default_cap_keeps_ordinary_episodes_whole(library):
    env = get_environment("countdown")
    policy = ScriptedPolicy(lambda node, chat: "VERDICT: WRONG" if node == "critique" else "<answer>1 + 2</answer>")
    episodes, _ = await run_episodes(env.sample(1), GraphDeps(policy, env, EpisodeConfig(retrieval=False), library))
    assert EpisodeConfig().max_stored_chars == 65_536
    assert all(a.truncated == {} for a in library.get(episodes[0].id).attempts)


def test_cap_attempt_is_idempotent_and_keeps_the_first_cut_length():
    from environments import Feedback

    call = ModelCall(node="solve", messages=[{"role": "user", "content": "q" * 50}], output="x" * 100)
    attempt = Attempt(index=0, solve=call, answer="y" * 30, feedback=Feedback.failure("m" * 5, answer="y" * 30))
    once = cap_attempt(attempt, 20)
    assert once.truncated == {"solve.messages[0].content": 50, "solve.output": 100, "answer": 30, "feedback.answer": 30}
    assert cap_attempt(once, 20) == once and cap_attempt(attempt, 1000) is attempt
    with pytest.raises(ValueError, match="max_stored_chars"):
        EpisodeConfig(max_stored_chars=10)


def test_training_datasets_skip_episodes_with_cut_text():
    """A cut output is not what the model wrote (and lacks its closing tag): never a training target."""
    from trainer.datasets import first_attempt_dataset, sft_dataset
    from trainer.synthetic import single_attempt_episode

    env = get_environment("arithmetic")
    task = env.sample(1)[0]
    right = single_attempt_episode("arithmetic", task, f"<answer>{task.reference['value']}</answer>")
    assert right.success and len(sft_dataset([right])) == 1
    cut = right.model_copy(update={"attempts": [right.attempts[0].model_copy(update={"truncated": {"solve.output": 99_999}})]})
    assert len(sft_dataset([cut])) == 0 and len(first_attempt_dataset([cut])) == 0
