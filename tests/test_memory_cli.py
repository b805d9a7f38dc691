"""``selfevolve memory ...`` end to end through Typer's runner, on a workspace filled by the library.

    .venv/bin/pytest tests/test_memory_cli.py -q
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from agent.commands import memory as memory_cmd
from memory.library import ExperienceLibrary
from memory.records import Episode
from tests.memory_factories import make_episode

ARITH = "arithmetic:digits=2"


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    memory_cmd.register(app)

    @app.callback()
    def main() -> None:
        """Test harness: the memory sub-app alone."""

    return app


@pytest.fixture
def workspace(tmp_path: Path, embedder) -> Path:
    ws = tmp_path / "ws"
    with ExperienceLibrary(ws, embedder=embedder) as lib:
        for i in range(6):
            lib.record(make_episode(i, env=ARITH, first_success=i % 2 == 0, success=i != 1))
        for i in range(3):
            lib.record(make_episode(i, env="countdown", topic="words"))
    return ws


def run(app: typer.Typer, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["memory", *args])
    return result.exit_code, result.output


def test_stats_json_and_table(app, workspace: Path) -> None:
    code, output = run(app, "stats", "-w", str(workspace), "--json")
    assert code == 0, output
    stats = json.loads(output)
    assert stats["episodes"] == 9 and stats["envs"][ARITH]["recovered"] == 2
    assert stats["index"]["status"] == "in sync"
    code, output = run(app, "stats", "-w", str(workspace))
    assert code == 0 and "first try" in output and "in sync" in output


def test_search_show(app, workspace: Path) -> None:
    code, output = run(app, "search", "What is 13 + 26?", "-w", str(workspace), "--env", ARITH, "--failure",
                       "-k", "2", "--json")
    assert code == 0, output
    hits = json.loads(output)["hits"]
    assert hits and all(h["env"] == ARITH and not h["success"] for h in hits)
    code, output = run(app, "show", hits[0]["episode_id"], "-w", str(workspace), "--json")
    assert code == 0 and Episode.model_validate(json.loads(output)).id == hits[0]["episode_id"]
    code, output = run(app, "show", hits[0]["episode_id"], "-w", str(workspace))
    assert code == 0 and "attempt 0" in output
    code, output = run(app, "search", "sort words", "-w", str(workspace), "-k", "2")
    assert code == 0 and "score" in output
    code, output = run(app, "show", "ep-missing", "-w", str(workspace))
    assert code == 2 and "no episode" in output


def test_export_jsonl_and_hf(app, workspace: Path, tmp_path: Path) -> None:
    out = tmp_path / "eps.jsonl"
    code, output = run(app, "export", str(out), "-w", str(workspace), "--env", ARITH, "--success", "--json")
    assert code == 0, output
    assert json.loads(output)["episodes"] == 5
    assert all(Episode.model_validate_json(line).success for line in out.read_text().splitlines())
    code, output = run(app, "export", str(tmp_path / "hf"), "--format", "hf", "-w", str(workspace))
    assert code == 0 and "Wrote 9 episodes" in output
    code, output = run(app, "export", str(tmp_path / "x"), "--format", "csv", "-w", str(workspace))
    assert code == 2 and "jsonl or hf" in output
    code, output = run(app, "export", str(tmp_path / "y"), "--env", "nope", "-w", str(workspace))
    assert code == 2 and "no episodes of env 'nope'" in output and "recorded envs" in output


def test_reindex_after_losing_the_index(app, workspace: Path) -> None:
    shutil.rmtree(workspace / "chroma")
    code, output = run(app, "stats", "-w", str(workspace), "--json")
    index = json.loads(output)["index"]
    assert code == 0 and index["behind"] == 0 and "directory was deleted" in index["healed"][0]
    assert sum(e["in_index"] for e in index["envs"].values()) == 9
    code, output = run(app, "reindex", "-w", str(workspace), "--json")
    assert code == 0, output
    assert json.loads(output) == {"reindexed": 9, "env": None, "index": "in sync"}
    code, output = run(app, "reindex", "--env", "countdown", "-w", str(workspace))
    assert code == 0 and "Reindexed 3 episodes of countdown" in output


def test_unreachable_server_is_a_clear_error(app, workspace: Path) -> None:
    code, output = run(app, "stats", "-w", str(workspace), "--chroma-url", "http://127.0.0.1:9")
    assert code == 2 and "cannot reach the Chroma server" in output
