"""The one cycle (agent/cycle.py) with a scripted policy whose version v0001 solves more tasks than the base:
paired evaluation, the gate promoting / rejecting / vetoing, reuse of stored evaluations, collection, and
``selfevolve eval --against`` driving the same functions. Evaluation episodes are never recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent import cycle
from agent.commands import evaluate as eval_cmd
from agent.graph import EpisodeConfig
from environments import get_environment
from tests.daemon_scripted import DaemonScriptedPolicy
from tests.scripted import ScriptedPolicy
from trainer import registry

ENV = "arithmetic"
SCRIPTED = "python:tests.daemon_scripted:policy"


def _candidate(lib, method: str = "sft"):
    def save(path: Path) -> None:
        path.mkdir(parents=True)
        (path / "adapter_config.json").write_text(json.dumps({"fake": True}))

    return registry.register_candidate(lib, lib.workspace, registry.next_version_id(lib, method), save,
                                       parent="base", method=method)


def _serving(lib, policy):
    async def evaluate_one(version_id: str) -> cycle.Evaluation:
        mv = lib.get_model_version(version_id)
        policy.set_adapter(mv.id, mv.adapter_path)
        return await cycle.evaluate_version(policy, HELD)

    return evaluate_one


HELD = cycle.HeldOut.each([get_environment(ENV)], 16, seed=3, max_attempts=1)


async def test_gate_promotes_a_better_candidate_on_paired_tasks(library):
    mv = _candidate(library)
    outcome = await cycle.gate(library, mv.id, _serving(library, DaemonScriptedPolicy()))
    assert outcome.current.version == "base" and outcome.candidate.version == mv.id
    assert list(outcome.candidate.outcomes) == list(outcome.current.outcomes) and len(outcome.candidate.outcomes) == 16
    assert outcome.candidate.accuracy()["first"] > outcome.current.accuracy()["first"]
    assert outcome.promoted and library.serving_version().id == mv.id
    stored = library.get_model_version(mv.id)
    assert stored.metrics["gate"]["promote"] and stored.note.startswith("gate: promote")
    assert library.count() == 0  # evaluation episodes are not recorded


async def test_gate_rejects_a_worse_candidate_and_a_veto_rejects_a_better_one(library):
    v1 = _candidate(library)
    await cycle.gate(library, v1.id, _serving(library, DaemonScriptedPolicy()))
    v2 = _candidate(library)  # v0002 is better still, but the veto (a tripwire) rejects it
    vetoed = await cycle.gate(library, v2.id, _serving(library, DaemonScriptedPolicy()), veto=lambda ev: "planted")
    assert vetoed.decision.promote and not vetoed.promoted
    assert library.get_model_version(v2.id).status == "rejected" and library.get_model_version(v2.id).note == "tripwire: planted"
    lose = await cycle.gate(library, "base", _serving(library, DaemonScriptedPolicy()), against=v1.id, apply=False)
    assert not lose.decision.promote and not lose.applied and library.serving_version().id == v1.id
    with pytest.raises(ValueError, match="are the same"):
        await cycle.gate(library, v1.id, _serving(library, DaemonScriptedPolicy()))


async def test_stored_evaluations_are_reused_unless_fresh(library):
    mv = _candidate(library)
    opened: list[str] = []

    def open_policy(version_id: str) -> DaemonScriptedPolicy:
        opened.append(version_id)
        return DaemonScriptedPolicy(version_id, library.get_model_version(version_id).adapter_path)

    first = await cycle.evaluate_or_reuse(library, mv.id, HELD, open_policy)
    again = await cycle.evaluate_or_reuse(library, mv.id, HELD, open_policy)
    assert opened == [mv.id] and again.reused and again.outcomes == first.outcomes
    assert (await cycle.evaluate_or_reuse(library, mv.id, HELD, open_policy, fresh=True)).outcomes == first.outcomes
    assert opened == [mv.id, mv.id]
    other = cycle.HeldOut.each([get_environment(ENV)], 16, seed=4, max_attempts=1)  # other tasks: not reused
    assert cycle.stored_evaluation(library, mv.id, other) is None


async def test_every_episode_failing_is_our_error_not_a_zero_score():
    def broken(node, chat):
        raise ConnectionError("backend down")

    with pytest.raises(cycle.EvaluationError, match="ConnectionError: backend down"):
        await cycle.evaluate_version(ScriptedPolicy(broken), HELD)
    env = get_environment(ENV)
    with pytest.raises(cycle.CollectionError, match="every episode failed") as info:
        await cycle.collect(ScriptedPolicy(broken), [(env, env.sample(3))], EpisodeConfig(retrieval=False))
    assert len(info.value.errors) == 3


async def test_collect_records_experience_per_environment(library):
    arith, countdown = get_environment(ENV), get_environment("countdown")
    plan = [(arith, arith.sample(3, seed=1)), (countdown, countdown.sample(2, seed=1))]
    episodes, summary = await cycle.collect(DaemonScriptedPolicy(), plan, EpisodeConfig(retrieval=False), library=library,
                                            feedback="majority:k=2", run_id="r1", metadata={"origin": "test"})
    assert summary.episodes == 5 and library.count(run_id="r1") == 5
    assert {e.env for e in episodes} == {arith.spec, countdown.spec}
    assert all(e.purpose == "train" and e.feedback_source == "majority" and e.metadata == {"origin": "test"}
               for e in library.episodes())


def test_held_out_shared_splits_the_total_evenly():
    envs = [get_environment(s) for s in ("countdown", "arithmetic", "arithmetic:digits=2")]
    held = cycle.HeldOut.shared(envs, 8)
    assert {e.spec: n for e, n in held.counts} == {"countdown": 2, "arithmetic": 3, "arithmetic:digits=2": 3}
    assert [e.spec for e, _ in cycle.HeldOut.shared(envs, 2).counts] == ["arithmetic", "arithmetic:digits=2"]


def test_cli_eval_against_serving_applies_the_gate_and_reuses_results(library, tmp_path):
    import typer

    mv = _candidate(library)
    app = typer.Typer()
    eval_cmd.register(app)

    @app.callback()
    def main() -> None:
        """Test harness: the eval command alone."""

    args = ["eval", "-e", ENV, "-n", "8", "--max-attempts", "1", "--base-model", SCRIPTED, "-w", str(library.workspace)]
    result = CliRunner().invoke(app, [*args, "--model", mv.id, "--against", "serving", "--apply", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["version"] == mv.id and report["against"]["version"] == "base" and report["n"] == 8
    assert report["gate"]["promote"] and report["status"] == "promoted"
    assert report["first_try_accuracy"] > report["against"]["first_try_accuracy"]
    again = CliRunner().invoke(app, [*args, "--json"])  # the serving version now: v0001, stored
    assert again.exit_code == 0 and "reusing stored evaluation" in again.stderr
    assert json.loads(again.stdout)["first_try_accuracy"] == report["first_try_accuracy"]
    bad = CliRunner().invoke(app, [*args, "--model", mv.id, "--against", mv.id])
    assert bad.exit_code == 2 and "are the same" in bad.output
    assert library.count() == 0
