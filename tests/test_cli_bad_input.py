"""The CLI tried as a new user would: every mistake is one clear line and a non-zero exit, never a traceback,
and nothing is written (no empty library left behind, no episodes recorded before the error).

Everything runs through the real Typer app with scripted plug-ins (``tests.daemon_scripted``), no model.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

import environments
from agent.cli import app
from environments.registry import _REGISTRY
from memory.library import ExperienceLibrary
from tests.memory_factories import make_episode

SCRIPTED = "python:tests.daemon_scripted:policy"


def cli(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, list(args))
    crashed = r.exception is not None and not isinstance(r.exception, SystemExit)
    text = r.output + (f"\nTraceback: {type(r.exception).__name__}: {r.exception}" if crashed else "")
    assert "Traceback" not in text, text
    return r.exit_code, text


def assert_clean_error(code: int, text: str, *needles: str) -> None:
    assert code not in (0,), text
    assert "error" in text.lower(), text
    for n in needles:
        assert n in text, (n, text)


@pytest.fixture
def filled(tmp_path: Path, embedder) -> Path:
    ws = tmp_path / "ws"
    with ExperienceLibrary(ws, embedder=embedder) as lib:
        for i in range(3):
            lib.record(make_episode(i, env="arithmetic"))
    return ws


# ----- plug-ins -----
@pytest.fixture
def broken_plugin(tmp_path: Path, monkeypatch):
    dist = tmp_path / "se_broken_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: se-broken-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[selfevolve.environments]\nbroken_demo = se_broken_missing_module:Env\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    monkeypatch.undo()
    environments.reload_entry_points()


def test_broken_plugin_does_not_take_down_envs_commands(broken_plugin, caplog):
    environments.reload_entry_points()  # what a fresh process does on its first env lookup
    code, text = cli("envs", "list", "--json")
    assert code == 0 and "arithmetic" in text
    assert any("se-broken-demo" in r.getMessage() for r in caplog.records)
    code, text = cli("envs", "sample", "arithmetic", "-n", "1")
    assert code == 0
    code, text = cli("envs", "sample", "broken_demo", "-n", "1")
    assert_clean_error(code, text, "se-broken-demo", "failed to load")


def test_envs_check_whose_check_raises(tmp_path: Path):
    from tests.cli_bad_input import register_raising_env

    register_raising_env()
    try:
        answer = tmp_path / "a.txt"
        answer.write_text("<answer>1</answer>")
        code, text = cli("envs", "check", "raising_check_demo", str(answer))
        assert_clean_error(code, text, "raising_check_demo", "ZeroDivisionError", "scorer bug")
    finally:
        _REGISTRY.pop("raising_check_demo", None)


def test_envs_sample_header_keeps_the_split():
    code, text = cli("envs", "sample", "arithmetic", "-n", "1", "--split", "eval")
    assert code == 0 and "[eval]" in text, text


# ----- workspaces -----
@pytest.mark.parametrize("argv", [["memory", "stats"], ["run", "--env", "arithmetic", "-n", "1", "--model", SCRIPTED],
                                  ["models", "list"], ["status"]])
def test_workspace_that_is_a_file(tmp_path: Path, argv):
    f = tmp_path / "ws.txt"
    f.write_text("not a workspace")
    code, text = cli(*argv, "--workspace", str(f))
    assert_clean_error(code, text, "is a file")
    assert f.read_text() == "not a workspace"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_workspace(tmp_path: Path):
    ws = tmp_path / "ro"
    ws.mkdir()
    ws.chmod(0o555)
    try:
        code, text = cli("run", "--env", "arithmetic", "-n", "1", "--model", SCRIPTED, "--workspace", str(ws))
        assert_clean_error(code, text, "not writable")
        assert list(ws.iterdir()) == []
    finally:
        ws.chmod(0o755)


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc (a directory nobody can create in)")
def test_workspace_that_cannot_be_created():
    code, text = cli("run", "--env", "arithmetic", "-n", "1", "--model", SCRIPTED, "--workspace", "/proc/selfevolve-ws")
    assert_clean_error(code, text, "cannot create workspace /proc/selfevolve-ws")


@pytest.mark.parametrize("argv", [["memory", "stats"], ["memory", "search", "x"], ["models", "list"], ["status"],
                                  ["status", "--json"], ["memory", "export", "out.jsonl"]])
def test_read_commands_never_create_a_workspace(tmp_path: Path, argv):
    ws = tmp_path / "typo"
    code, text = cli(*argv, "--workspace", str(ws))
    assert_clean_error(code, text, str(ws))
    assert not ws.exists()


def test_failed_run_leaves_no_empty_library(tmp_path: Path):
    ws = tmp_path / "new"
    code, text = cli("run", "--env", "arithmetic", "-n", "1", "--model", "hf:/no/such/model", "--workspace", str(ws))
    assert_clean_error(code, text, "/no/such/model")
    assert not ws.exists()


def test_status_json_when_no_daemon_has_run(filled: Path):
    r = CliRunner().invoke(app, ["status", "--json", "--workspace", str(filled)])
    assert r.exit_code == 1
    report = json.loads(r.stdout)
    assert report["status"] == "never run" and report["workspace"] == str(filled)


# ----- memory, eval, train -----
def test_memory_search_unknown_env(filled: Path):
    code, text = cli("memory", "search", "anything", "--env", "nosuch_env", "--workspace", str(filled))
    assert_clean_error(code, text, "nosuch_env", "arithmetic")


def _eval_records(ws: Path) -> int:
    with sqlite3.connect(ws / "experience.db") as db:
        return db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] + db.execute("SELECT COUNT(*) FROM episodes").fetchone()[0]


def test_eval_against_unknown_version_fails_before_evaluating(filled: Path):
    before = _eval_records(filled)
    code, text = cli("eval", "--env", "arithmetic", "-n", "2", "--base-model", SCRIPTED, "--against", "v9999-nope",
                     "--workspace", str(filled))
    assert_clean_error(code, text, "v9999-nope")
    assert "eval base" not in text  # no evaluation ran
    assert _eval_records(filled) == before


def test_train_after_the_plugin_env_was_uninstalled(tmp_path: Path, embedder):
    ws = tmp_path / "ws"
    with ExperienceLibrary(ws, embedder=embedder) as lib:
        for i in range(4):
            lib.record(make_episode(i, env="uninstalled_plugin_env", first_success=False, success=True))
    code, text = cli("train", "--method", "sft", "--steps", "1", "--workspace", str(ws))
    assert_clean_error(code, text, "uninstalled_plugin_env", "not installed")
    assert not (ws / "runs").exists() or not any((ws / "runs").iterdir())


# ----- smaller -----
def test_run_prints_its_seed(tmp_path: Path):
    r = CliRunner().invoke(app, ["run", "--env", "arithmetic", "-n", "1", "--model", SCRIPTED, "--no-retrieval",
                                 "--seed", "1234", "--workspace", str(tmp_path / "ws")])
    assert r.exit_code == 0, r.output
    assert "1234" in r.output


def test_failed_episode_hint_is_not_labelled_what_worked():
    failed = make_episode(0, env="arithmetic", first_success=False, success=False)
    assert "What worked:" not in failed.hint_text() and "did not work" in failed.hint_text()
    assert "What worked:" in make_episode(1, env="arithmetic").hint_text()


def test_reasoning_gym_difficulty_of_range_settings():
    from environments.reasoning_gym_env import difficulty_level

    assert difficulty_level({"num_terms": (2, 4), "num_digits": [1, 3]}) == 5.0  # midpoints 3 + 2
    assert difficulty_level({"n": 3, "name": "x"}) == 3.0
    assert difficulty_level("not a dict") == 0.0
