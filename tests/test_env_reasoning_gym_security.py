"""reasoning-gym scorers never run model text on the host (issue 19.1): every dataset, four payloads.

Several scorers ``eval`` the answer or parse it with sympy (which evaluates). Every answer is now scored in
the sandboxed worker, eval-readers get literals only and parse_expr gets plain math only, under
``check_timeout_s``. A file-writing payload, an import, a hang and a memory bomb go through *every*
dataset: nothing is written anywhere, none succeeds, each returns within a bound. "Scored 0" is
success = 0: 21 datasets give wrong text some partial credit of their own (0.01-0.2, a format or
similarity credit; quantum_lock 0.5 because the letters A-C in a payload happen to press a valid button
sequence); that is their scoring, never a full score.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from environments import Task, get_environment
from environments.reasoning_gym_env import reasoning_gym_tasks, scoring_worker
from environments.sandbox._codec import encode
from environments.sandbox.worker import BACKSTOP_S

rg = pytest.importorskip("reasoning_gym")
TIMEOUT_S = 1.0
NEEDS_OPTIONS = {"composite"}  # has no default config


def payloads(target: Path) -> dict[str, str]:
    return {
        "file_write": f"__import__('os').system('touch {target}') or open('{target}', 'w').write('x')",
        "import": f"__import__('subprocess').run(['touch', '{target}'])",
        "hang": "9**9**9**9",
        "memory_bomb": "[7] * 10**11",
    }


def one_task(name: str) -> tuple[object, Task]:
    """A task of dataset ``name`` built from a one-item dataset (fast), as ReasoningGym.generate would."""
    env = get_environment(f"reasoning_gym:{name},check_timeout_s={TIMEOUT_S}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        entry = rg.create_dataset(name, seed=42, size=1)[0]
    reference = {"index": 0, "answer": str(entry["answer"])}
    try:
        reference["entry"] = encode({"answer": entry["answer"], "metadata": entry.get("metadata", {})})
    except TypeError:
        pass
    return env, env.make_task(entry["question"], reference, 0.0, "train")


def test_every_dataset_scores_every_payload_zero_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "pwned.txt"
    names = [n for n in reasoning_gym_tasks() if n not in NEEDS_OPTIONS]
    assert len(names) >= 100
    slowest, not_zero = 0.0, []
    for name in names:
        env, task = one_task(name)
        for kind, payload in payloads(target).items():
            start = time.monotonic()
            feedback = env.verify(task, f"<answer>{payload}</answer>")
            slowest = max(slowest, time.monotonic() - start)
            if feedback.success or feedback.reward >= 1.0:
                not_zero.append((name, kind, feedback.reward, feedback.message[:80]))
            assert not target.exists(), f"{name} / {kind} wrote a file"
    assert not_zero == []
    assert slowest < TIMEOUT_S + BACKSTOP_S + 10, slowest  # the worker's own kill fires at TIMEOUT_S
    assert list(tmp_path.iterdir()) == []


def test_the_reference_still_scores_one_in_the_sandbox():
    for name in ["spiral_matrix", "n_queens", "binary_matrix", "string_insertion", "polynomial_multiplication",
                 "simple_integration", "puzzle24", "countdown", "leg_counting"]:
        env, task = one_task(name)
        feedback = env.verify(task, f"<answer>{task.reference['answer']}</answer>")
        assert feedback.success, (name, feedback.message)


def test_the_reported_exploit_through_the_cli_writes_nothing(tmp_path, monkeypatch):
    from agent.cli import app

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["envs", "check", "reasoning_gym:spiral_matrix", "-"],
                                input="<answer>__import__('os').system('id > pwned.txt')</answer>")
    assert result.exit_code == 1 and "wrong" in result.output
    assert not (tmp_path / "pwned.txt").exists()
    start = time.monotonic()
    result = CliRunner().invoke(app, ["envs", "check", "reasoning_gym:polynomial_multiplication,check_timeout_s=1", "-"],
                                input="<answer>9**9**9**9</answer>")
    assert result.exit_code == 1 and time.monotonic() - start < 1 + BACKSTOP_S + 10


def test_a_task_recorded_in_another_process_scores_against_what_it_recorded():
    """polynomial_multiplication generates different items under another PYTHONHASHSEED: the recorded
    entry, not a regeneration, is what gets scored."""
    code = ("import json; from environments import get_environment; "
            "print(get_environment('reasoning_gym:polynomial_multiplication').sample(1, seed=3)[0].model_dump_json())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300,
                         env={**__import__("os").environ, "PYTHONHASHSEED": "12345"}, cwd=Path(__file__).parents[1])
    task = Task.model_validate(json.loads(out.stdout.strip().splitlines()[-1]))
    env = get_environment("reasoning_gym:polynomial_multiplication")
    assert env.verify(task, f"<answer>{task.reference['answer']}</answer>").success


def test_a_dead_worker_is_restarted():
    env, task = one_task("leg_counting")
    assert env.verify(task, f"<answer>{task.reference['answer']}</answer>").success
    worker = scoring_worker()
    starts = worker.starts
    worker._spawned.kill()  # as if it crashed
    assert env.verify(task, f"<answer>{task.reference['answer']}</answer>").success
    assert worker.starts == starts + 1


def test_game_of_life_halting_no_longer_accepts_any_text():
    env, task = one_task("game_of_life_halting")
    assert not env.verify(task, "<answer>banana</answer>").success
    assert env.verify(task, f"<answer>{task.reference['answer']}</answer>").success
