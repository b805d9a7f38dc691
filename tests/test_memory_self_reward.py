"""The generation–verification gap per (feedback source, model version), from recorded ground truths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from agent.commands import memory as memory_cmd
from memory.library import ExperienceLibrary
from tests.memory_factories import make_episode


@pytest.fixture
def workspace(tmp_path: Path, embedder) -> Path:
    ws = tmp_path / "ws"
    with ExperienceLibrary(ws, embedder=embedder) as lib:
        # majority, base: 2 episodes, one attempt each; self-reward says success both times, truth only once
        lib.record(make_episode(0, feedback_source="majority", truth=[True]))
        lib.record(make_episode(1, feedback_source="majority", truth=[False]))
        # majority, v1: failed then recovered (self-reward F, T); truth (F, F) -> 1 agree, 1 false positive
        lib.record(make_episode(2, feedback_source="majority", model_version="v1", first_success=False, success=True,
                                truth=[False, False]))
        # critique without ground truth (no verifier): left out; verifier episodes: left out
        lib.record(make_episode(3, feedback_source="critique"))
        lib.record(make_episode(4))
        lib.record(make_episode(5, env="countdown", topic="words", feedback_source="rubric", truth=[True]))
    return ws


def test_self_reward_agreement_per_source_and_version(workspace: Path, embedder) -> None:
    with ExperienceLibrary(workspace, embedder=embedder) as lib:
        gap = lib.self_reward_agreement()
        assert set(gap) == {"majority", "rubric"}
        base, v1 = gap["majority"]["base"], gap["majority"]["v1"]
        assert base == {"attempts": 2, "agreement": 0.5, "false_positive_rate": 0.5, "mean_self_reward": 1.0,
                        "mean_true_reward": 0.5}
        assert v1["attempts"] == 2 and v1["agreement"] == 0.5 and v1["false_positive_rate"] == 0.5
        assert v1["mean_self_reward"] == 0.5 and v1["mean_true_reward"] == 0.0
        assert gap["rubric"]["base"]["agreement"] == 1.0
        assert set(lib.self_reward_agreement(env="countdown")) == {"rubric"}
        assert lib.stats()["self_reward"] == gap
        assert lib.stats(env="arithmetic:digits=2")["self_reward"].keys() == {"majority"}


def test_self_reward_is_empty_without_ground_truth(tmp_path: Path, embedder) -> None:
    with ExperienceLibrary(tmp_path / "ws", embedder=embedder) as lib:
        lib.record(make_episode(0))
        assert lib.stats()["self_reward"] == {}


def test_memory_stats_shows_the_gap(workspace: Path) -> None:
    app = typer.Typer()
    memory_cmd.register(app)

    @app.callback()
    def main() -> None:
        """Test harness."""

    result = CliRunner().invoke(app, ["memory", "stats", "-w", str(workspace), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["self_reward"]["majority"]["v1"]["attempts"] == 2
    result = CliRunner().invoke(app, ["memory", "stats", "-w", str(workspace)])
    assert result.exit_code == 0 and "Self-reward vs hidden verifier" in result.output and "majority" in result.output
