"""python_code through everything else: episodes, the library and its search, the trainer's datasets and
rewards (which re-verify through the sandbox), and the daemon's curriculum levels."""

from __future__ import annotations

import re

import pytest

from agent.daemon.curriculum import level_stats, plan
from agent.graph import EpisodeConfig, GraphDeps
from agent.runner import run_episodes
from environments import get_environment
from memory.library import ExperienceLibrary
from tests.scripted import ScriptedPolicy
from trainer import datasets as D
from trainer.rewards import EnvironmentReward

SPEC = "python_code:max_level=1"
RIGHT = {"add": "return a + b", "square": "return x * x", "to_upper": "return s.upper()", "length": "return len(s)",
         "is_even": "return n % 2 == 0", "first": "return xs[0]", "last_char": "return s[-1]"}
SIGNATURE = re.compile(r"Write a Python function `(\w+)\(([^)]*)\)`")


def code(chat, right: bool) -> str:
    name, params = SIGNATURE.search(chat[1]["content"]).groups()  # the task's own user turn
    body = RIGHT[name] if right else "return None"
    return f"```python\ndef {name}({params}):\n    {body}\n```"


def rule(node, chat):
    if node == "critique":
        return "VERDICT: CORRECT"
    if node == "reflect":
        return "My function returned None; it must compute and return the value."
    return code(chat, right=node == "retry")


@pytest.fixture(scope="module")
def env():
    return get_environment(SPEC)


@pytest.fixture(scope="module")
def tasks(env):
    return [t for t in env.sample(60, seed=4) if t.reference["entry"] in RIGHT][:4]


async def test_episodes_memory_datasets_rewards_and_curriculum(env, tasks, tmp_path, embedder):  # noqa: F811
    library = ExperienceLibrary(tmp_path / "ws", embedder=embedder)
    try:
        deps = GraphDeps(ScriptedPolicy(rule), env, EpisodeConfig(max_attempts=2, retrieval=False), library)
        episodes, summary = await run_episodes(tasks, deps)
        assert summary.errors == [] and len(episodes) == len(tasks)
        for ep in episodes:
            assert not ep.first_success and ep.success  # wrong first, right after the reflection
            assert ep.attempts[0].feedback.message.startswith("Test 1 of 8 failed:")
        # memory: recorded and searchable
        assert library.store.count(env=env.spec) == len(tasks)
        hits = library.search("write a python function", env=env.spec, k=2)
        assert hits and hits[0].env == env.spec and hits[0].episode_id in {ep.id for ep in episodes}
        # datasets: R3/GRPO on reflections, SFT on successes
        assert len(D.reflection_dataset(episodes)) == len(tasks)
        assert len(D.sft_dataset(episodes)) == len(tasks)
        # the GRPO reward re-verifies through the sandbox: right code 1, an always-equal object 0
        reward = EnvironmentReward()
        task = episodes[0].task
        right = code(episodes[0].attempts[0].solve.messages, right=True)
        cheat = re.sub(r"return .*", "return type('E', (), {'__eq__': lambda s, o: True})()", right)
        assert reward(prompts=[[], []], completions=[right, cheat], task=[task.model_dump_json()] * 2,
                      env=[task.env] * 2) == [1.0, 0.0]
        # the STaR hint never shows the hidden tests
        hint = D.default_hint(task)
        assert "_cases" not in hint and "_expected" not in hint
        # the daemon's curriculum sees python_code's levels as its difficulty buckets
        stats = level_stats(episodes)
        assert set(stats) == {(env.spec, 1.0)}
        counts, levels = plan([env.spec], [1.0], stats, 8)
        assert counts == {env.spec: 8} and set(levels[env.spec]) == {1.0}
    finally:
        library.close()


def test_levels_are_curriculum_buckets():
    env = get_environment("python_code:min_level=1,max_level=5")
    assert {t.difficulty for t in env.sample(100, seed=0)} == {1.0, 2.0, 3.0, 4.0, 5.0}
