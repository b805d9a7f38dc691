"""The example environment in docs/environments.md runs, samples and verifies (so the docs cannot rot)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from environments import registry

DOC = Path(__file__).resolve().parents[1] / "docs" / "environments.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.DOTALL)


@pytest.fixture
def example(capsys):
    """Execute the docs' python block as a module; unregister its environment afterwards."""
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) == 1, "docs/environments.md should have exactly one ```python example"
    namespace = {"__name__": "docs_environments_example"}
    before = set(registry._REGISTRY)
    try:
        exec(compile(blocks[0], str(DOC), "exec"), namespace)
        yield namespace, capsys.readouterr().out
    finally:
        for name in set(registry._REGISTRY) - before:
            del registry._REGISTRY[name]


def test_docs_example_runs_samples_and_verifies(example):
    ns, printed = example
    assert "Spell the word" in printed and "reward=1.0 success=True" in printed
    env = ns["env"]
    assert env.spec == "word_reversal:min_length=5"
    tasks = env.sample(20, "train", seed=1)
    assert tasks == env.sample(20, "train", seed=1)
    evals = {t.question for t in env.sample(20, "eval", seed=1)}
    assert evals and not evals & {t.question for t in tasks}
    for task in tasks:
        ok = env.verify(task, f"<answer>{task.reference['reversed']}</answer>")
        assert ok.success and ok.reward == 1.0
        bad = env.verify(task, "<answer>xyz</answer>")
        assert not bad.success and task.reference["reversed"] not in bad.message
    assert not env.verify(tasks[0], "").success


def test_docs_example_is_registered_by_name(example):
    from environments import get_environment, list_environments

    assert "word_reversal" in list_environments()
    assert get_environment("word_reversal").sample(2, seed=0)[0].env == "word_reversal"
