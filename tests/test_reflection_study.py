"""bench.experiments.reflection end to end with a scripted policy whose behaviour per arm is known.

The rule: first attempts are right only when the first operand is even; a retry that can see its failed
answer (the same conversation) repeats it; a retry in a fresh turn (question + feedback + reflection)
is right; a retry shown memory hints is right. So every arm's recovery is known exactly, and the
tables must say so. The real model runs in the study itself (``python -m bench.experiments.reflection run``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from agent import prompts
from bench.experiments.reflection import study
from bench.experiments.reflection.config import StudyConfig
from bench.experiments.reflection.records import env_dir, read
from bench.experiments.reflection.report import write_report
from tests.scripted import ScriptedPolicy

SPEC = "arithmetic:digits=2"


def _sum(text: str) -> tuple[int, int]:
    a, b = map(int, re.findall(r"What is (\d+) \+ (\d+)\?", text)[-1])
    return a, a + b


def rule(node: str, chat: list[dict[str, str]]) -> str:
    text = "\n".join(m["content"] for m in chat)
    first, value = _sum(text)
    last = chat[-1]["content"]
    if "You tried to solve the problem above" in last:
        return "I should add the tens and the units separately."
    if prompts.HINTS_HEADER in text and "What to do differently" in last:
        return f"<answer>{value}</answer>"
    if "What to do differently" in last:
        return f"<answer>{value}</answer>" if "too" in last else f"<answer>{value + 2}</answer>"
    if len(chat) > 2:  # the same conversation: repeat the failed answer
        return chat[2]["content"]
    return f"<answer>{value if first % 2 == 0 else value + 1}</answer>"


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, StudyConfig, ScriptedPolicy]:
    tmp_path = tmp_path_factory.mktemp("reflection")
    cfg = StudyConfig(envs=[SPEC], failures=6, k=2, library_tasks=16, solve_tokens=16, reflect_tokens=16)
    policy = ScriptedPolicy(rule)
    import asyncio

    asyncio.run(study.run_study(cfg, tmp_path, policy=policy))
    return tmp_path, cfg, policy


def test_every_arm_recovers_as_scripted(ran) -> None:
    out, cfg, _ = ran
    where = env_dir(out, SPEC)
    first = read(where / "first.jsonl")
    assert sum(not r["success"] for r in first) >= cfg.failures
    rates = {}
    for arm in cfg.arms:
        rows = read(where / f"{arm}.jsonl")
        assert len(rows) == cfg.failures * cfg.k, arm
        rates[arm] = sum(r["success"] for r in rows) / len(rows)
    assert rates["a"] == rates["b"] == rates["c"] == rates["a_bare"] == rates["b_bare"] == 0.0
    assert rates["e"] == 1.0  # informative feedback ("too high") + a fresh turn: right
    assert rates["e_bare"] == 0.0  # bare feedback: the scripted model has nothing to go on
    assert rates["d"] == 1.0
    d_rows = read(where / "d.jsonl")
    assert all(r["hints"] > 0 for r in d_rows), "train tasks with an even first operand succeed, so hints exist"
    assert json.loads((out / "envs.json").read_text()) == [SPEC]


def test_rerun_resumes_without_duplicates_and_refuses_other_settings(ran) -> None:
    out, cfg, policy = ran
    calls = len(policy.calls)
    import asyncio

    asyncio.run(study.run_study(cfg, out, policy=policy))
    assert len(policy.calls) == calls  # nothing left to do
    assert len(read(env_dir(out, SPEC) / "a.jsonl")) == cfg.failures * cfg.k
    with pytest.raises(SystemExit, match="other settings"):
        asyncio.run(study.run_study(cfg.model_copy(update={"k": 3}), out, policy=policy))


def test_report_shows_the_known_rates_and_a_significant_difference(ran) -> None:
    out, _, _ = ran
    doc = write_report(out, out / "reflection.md", notes=out / "none.md")
    text = doc.read_text()
    assert "| e | reflect, retry in a fresh turn without the failed answer | 100.0% [100.0, 100.0]" in text
    assert "| a | reflect, retry in the same conversation (R3) | 0.0% [0.0, 0.0]" in text
    row = next(line for line in text.splitlines() if "| e − a |" in line)
    assert "+100.0 pts" in row and float(row.rsplit("|", 2)[1]) < 0.05


def test_repaired_seeds_are_right_numbers_put_into_the_tags_and_reverified() -> None:
    from bench.experiments.reflection.retrieval import repaired
    from environments import get_environment
    from memory.records import Attempt, Episode, ModelCall

    env = get_environment("arithmetic:digits=2,answer_format=strict")
    tasks = env.sample(3, seed=1)
    texts = [f"{tasks[0].question[8:-1]} = {tasks[0].reference['value']}",  # right, untagged: repaired
             f"= {tasks[1].reference['value'] + 1}",  # wrong number: not repaired
             f"<answer>{tasks[2].reference['value']}</answer>"]  # already a success: nothing to repair
    episodes = []
    for t, text in zip(tasks, texts, strict=True):
        fb = env.verify(t, text)
        call = ModelCall(node="solve", messages=t.messages(), output=text)
        episodes.append(Episode(env=env.spec, task=t, attempts=[Attempt(index=0, solve=call, answer=fb.answer, feedback=fb)]))
    [seed] = repaired(episodes, env)
    assert seed.task.id == tasks[0].id and seed.success and "<answer>" in seed.attempts[0].solve.output
    assert seed.metadata["seeded_by"] == "reformat"


def test_the_study_runs_on_python_code_with_sandbox_verdicts(tmp_path: Path) -> None:
    """python_code wired through the ablation (issue 18): every attempt is judged in the sandbox, the feedback
    names one failing case, never the hidden test set. The scripted model writes code that returns None
    everywhere except in a fresh turn, where it returns the example's value (wrong on the other cases)."""
    import asyncio

    spec = "python_code:min_level=1,max_level=1"

    def code(node: str, chat: list[dict[str, str]]) -> str:
        text = "\n".join(m["content"] for m in chat)
        name = re.findall(r"function `(\w+)\(", text)[-1]
        if "You tried to solve the problem above" in chat[-1]["content"]:
            return "I should return the right value for each input."
        example = re.findall(r"returns (.+)\.\n", text)[-1]
        value = example if "What to do differently" in chat[-1]["content"] else "None"
        return f"<answer>def {name}(*args):\n    return {value}</answer>"

    cfg = StudyConfig(envs=[spec], arms=["a", "c", "e"], failures=3, k=1, library_tasks=8, solve_tokens=16,
                      reflect_tokens=16)
    asyncio.run(study.run_study(cfg, tmp_path, policy=ScriptedPolicy(code)))
    where = env_dir(tmp_path, spec)
    first = read(where / "first.jsonl")
    failed = [r for r in first if not r["success"]]
    assert len(failed) >= 3
    for r in failed:
        assert re.match(r"Test 1 of \d+ failed: \w+\(.*\) returned None, expected .+\.$", r["feedback"]), r["feedback"]
        assert r["feedback"].count("expected") == 1  # one case named, not the hidden set
    for arm in cfg.arms:
        rows = read(where / f"{arm}.jsonl")
        assert len(rows) == cfg.failures and not any(r["success"] for r in rows), arm
    assert all("return None" in r["output"] for r in read(where / "a.jsonl"))  # the same conversation
    assert not any("return None" in r["output"] for r in read(where / "e.jsonl"))  # the fresh turn was taken
