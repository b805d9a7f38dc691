"""Episode graph logic with a scripted policy: routing, the attempt bound, exact recorded prompts."""

import re

import pytest

from agent.graph import EpisodeConfig, GraphDeps
from agent.runner import run_episodes
from environments import get_environment
from tests.scripted import ScriptedPolicy, wrong_then_right


def value_of(chat):
    m = re.search(r"What is ([\d +*-]+)\?", chat[1]["content"])
    from environments.arithmetic import _evaluate

    tokens = m.group(1).split()
    return _evaluate([int(t) for t in tokens[::2]], tokens[1::2])


@pytest.fixture()
def env():
    return get_environment("arithmetic:digits=2,answer_format=strict")


@pytest.mark.parametrize("design", ["fresh", "conversation"])
async def test_wrong_then_reflect_then_right(env, design):
    from memory.records import put_reflection

    policy = ScriptedPolicy(wrong_then_right(value_of))
    tasks = env.sample(4, seed=1)
    cfg = EpisodeConfig(retrieval=False, retry_design=design)
    episodes, summary = await run_episodes(tasks, GraphDeps(policy, env, cfg), concurrency=4)
    assert [e.task.id for e in episodes] == [t.id for t in tasks]
    assert summary.first_try_accuracy == 0.0 and summary.final_accuracy == 1.0 and summary.recovered_by_retry == 4
    assert summary.retried == 4 and summary.retrieval_hits == 0  # retrieval off: no episode is shown a hint
    assert summary.critique_agreement == 0.5  # claims CORRECT on the wrong first answer and the right retry
    for ep in episodes:
        first, second = ep.attempts
        assert not first.feedback.success and second.feedback.success
        assert first.critique is not None and first.critique_verdict is True
        # The invariant the R3 trainer relies on: the retry holds the reflection at its recorded slot.
        assert first.reflect is not None
        assert second.solve.node == "retry"
        i, a, b = second.solve.reflection_slot
        assert second.solve.messages[i]["content"][a:b] == first.reflect.output
        rebuilt = put_reflection(second.solve.messages, second.solve.reflection_slot, "NEW")
        assert "NEW" in rebuilt[i]["content"] and first.reflect.output not in rebuilt[i]["content"]
        if design == "conversation":  # R3's: the same conversation continues
            assert second.solve.messages[:-1] == [*first.reflect.messages, {"role": "assistant", "content": first.reflect.output}]
        else:  # one fresh turn: the question and the feedback, never the failed answer's text
            assert len(second.solve.messages) == 2 and ep.task.question in second.solve.messages[1]["content"]
            assert first.feedback.message in second.solve.messages[1]["content"]
            assert first.solve.output not in second.solve.messages[1]["content"]
        assert first.reflect.messages[:-1] == [*first.solve.messages, {"role": "assistant", "content": first.solve.output}]
        assert first.feedback.message in first.reflect.messages[-1]["content"]
        assert first.solve.messages == ep.task.messages()
    from trainer.datasets import reflection_dataset, retry_prompt

    rows = reflection_dataset(episodes)  # the R3 dataset takes the graph's episodes of either design
    assert len(rows) == 4 and all("NEW" in str(retry_prompt(r["retry_template"], r["retry_slot"], "NEW")) for r in rows)


async def test_attempt_bound_and_no_critique(env):
    policy = ScriptedPolicy(lambda node, chat: "no idea" if node != "reflect" else "think harder")
    cfg = EpisodeConfig(max_attempts=3, critique=False, retrieval=False)
    episodes, summary = await run_episodes(env.sample(2), GraphDeps(policy, env, cfg))
    assert all(len(e.attempts) == 3 for e in episodes)
    assert all(a.critique is None for e in episodes for a in e.attempts)
    assert [a.reflect is not None for a in episodes[0].attempts] == [True, True, False]
    assert "No final answer" in episodes[0].attempts[0].feedback.message
    assert summary.final_accuracy == 0.0 and summary.critique_agreement is None


async def test_first_try_success_stops(env):
    policy = ScriptedPolicy(lambda node, chat: f"<answer>{value_of(chat)}</answer>" if node == "solve" else "VERDICT: CORRECT")
    episodes, _ = await run_episodes(env.sample(3), GraphDeps(policy, env, EpisodeConfig(retrieval=False)))
    assert all(len(e.attempts) == 1 and e.first_success for e in episodes)
    assert not any(node == "reflect" for node, _ in policy.calls)


async def test_policy_errors_are_reported_not_swallowed(env):
    def rule(node, chat):
        if value_of(chat) % 2 == 0:
            raise ConnectionError("backend down")
        return "<answer>0</answer>"

    episodes, summary = await run_episodes(env.sample(8, seed=3), GraphDeps(ScriptedPolicy(rule), env, EpisodeConfig(retrieval=False, max_attempts=1)))
    assert summary.errors and all("ConnectionError: backend down" in e.error for e in summary.errors)
    assert episodes and len(episodes) + len(summary.errors) == 8
    assert all(value_of(e.task.messages()) % 2 == 1 for e in episodes)


async def test_concurrency_overlaps_calls(env):
    policy = ScriptedPolicy(lambda node, chat: "<answer>1</answer>", delay=0.05)
    cfg = EpisodeConfig(retrieval=False, critique=False, max_attempts=1)
    _, summary = await run_episodes(env.sample(16), GraphDeps(policy, env, cfg), concurrency=16)
    assert summary.seconds < 16 * 0.05  # sequential would take 0.8 s


async def test_retrieval_hints_shown_and_recorded(env, library):
    """Hints come from the real library; the same task and held-out tasks are never shown."""
    policy = ScriptedPolicy(wrong_then_right(value_of))
    new_task = env.sample(1, seed=99)[0]
    past, _ = await run_episodes([*env.sample(3, seed=7), new_task], GraphDeps(policy, env, EpisodeConfig(retrieval=False), library))
    held_out, _ = await run_episodes(env.sample(1, "eval"), GraphDeps(policy, env, EpisodeConfig(retrieval=False), library))
    episodes, _ = await run_episodes([new_task], GraphDeps(policy, env, EpisodeConfig(k=2), library=library))
    ep = episodes[0]
    same_task = {e.id for e in past if e.task.id == new_task.id}
    assert len(ep.retrieved_ids) == 2 and held_out[0].id not in ep.retrieved_ids and not same_task & set(ep.retrieved_ids)
    first_prompt = ep.attempts[0].solve.messages[1]["content"]
    assert "from your memory" in first_prompt and "I added one too many" in first_prompt
    for hint_id in ep.retrieved_ids:  # the hint shown is the recorded episode's own hint text
        assert library.get(hint_id).hint_text() in first_prompt
    assert library.get(ep.id) == ep


async def test_recursion_limit_is_the_exact_bound(env, monkeypatch):
    """The longest episode (every attempt fails, critique on) fits the limit, and one step less does not."""
    import agent.runner as runner
    from agent.graph import recursion_limit

    cfg = EpisodeConfig(max_attempts=3, critique=True, retrieval=False)
    policy = ScriptedPolicy(lambda node, chat: "no idea" if node != "reflect" else "think harder")
    episodes, _ = await run_episodes(env.sample(1), GraphDeps(policy, env, cfg))
    assert len(episodes[0].attempts) == 3
    monkeypatch.setattr(runner, "recursion_limit", lambda c: recursion_limit(c) - 1)
    episodes, summary = await run_episodes(env.sample(1), GraphDeps(policy, env, cfg))
    assert not episodes and "Recursion limit" in summary.errors[0].error


async def test_hints_come_from_the_index_metadata_and_old_vectors_fall_back_to_sqlite(env, library, monkeypatch):
    import dataclasses

    policy = ScriptedPolicy(wrong_then_right(value_of))
    await run_episodes(env.sample(3, seed=7), GraphDeps(policy, env, EpisodeConfig(retrieval=False), library))
    gets = []
    real_get, real_search = library.get, library.search
    monkeypatch.setattr(library, "get", lambda i: gets.append(i) or real_get(i))
    new = env.sample(1, seed=99)
    fresh, _ = await run_episodes(new, GraphDeps(policy, env, EpisodeConfig(k=2, record=False), library))
    assert len(fresh[0].retrieved_ids) == 2 and gets == []  # no SQLite read per hit
    old = lambda *a, **k: [dataclasses.replace(h, task_id="", split="") for h in real_search(*a, **k)]  # noqa: E731
    monkeypatch.setattr(library, "search", old)  # vectors indexed before the metadata had task id and split
    legacy, _ = await run_episodes(new, GraphDeps(policy, env, EpisodeConfig(k=2, record=False), library))
    assert legacy[0].retrieved_ids == fresh[0].retrieved_ids and gets == fresh[0].retrieved_ids
    assert legacy[0].attempts[0].solve.messages == fresh[0].attempts[0].solve.messages
