"""The daemon loop end to end with a scripted policy, a fake trainer and a hashing embedder (seconds),
and once with the real embedded model (slow)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.daemon import control
from agent.daemon.config import load_config, parse_config
from agent.daemon.loop import Daemon

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = {
    "model": "python:tests.daemon_scripted:policy",
    "embedder": "python:tests.daemon_scripted:HashEmbedder",
    "tensorboard": False,
}


def scripted_config(**over):
    data = {
        **PLUGINS, "episodes_per_cycle": 8, "concurrency": 4,
        "environments": [{"spec": "arithmetic:digits=1"}, {"spec": "arithmetic:digits=2", "weight": 2}],
        "training": {"trainer": "python:tests.daemon_scripted:fake_train", "method": "sft", "steps": 2,
                     "min_new_failures": 2},
        "gate": {"eval_size": 16, "primary": "first"},
        "monitors": {"tasks": 2, "k": 4},
        "budgets": {"cycles": 3},
    }
    for key, value in over.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    return parse_config(data)


def run(ws, cfg):
    return asyncio.run(Daemon(ws, cfg).run())


def test_cycles_train_gate_promote_and_hot_swap(tmp_path):
    reason = run(tmp_path, scripted_config())
    assert reason == "budget: cycles 3 >= 3"
    state = control.read_state(tmp_path)
    assert state["status"] == "stopped" and state["cycles_completed"] == 3
    assert state["totals"]["episodes"] == 24 and state["totals"]["trainings"] == 3
    from memory.library import ExperienceLibrary
    from tests.daemon_scripted import HashEmbedder

    with ExperienceLibrary(tmp_path, embedder=HashEmbedder()) as lib:
        versions = {v.id: v for v in lib.list_model_versions()}
        assert versions["v0001-sft"].status in ("promoted", "retired")  # each version beats its parent
        assert lib.serving_version().id == "v0003-sft" == state["serving_version"]
        runs = [r for r in lib.runs() if r.kind == "daemon"]
        assert len(runs) == 3 and all(r.finished_at for r in runs)
        gate = runs[-1].summary["gate"]
        assert gate["promote"] and gate["candidate_accuracy"]["first"] > gate["current_accuracy"]["first"]
        assert lib.count() == 24  # eval episodes are not recorded
        assert {e.model_version for e in lib.episodes(run_id=runs[-1].id)} == {"v0002-sft"}
    assert state["monitors"]["probe_tasks"] == 2 and "balance_score" in state["monitors"]
    events = [json.loads(line)["event"] for line in control.log_path(tmp_path).read_text().splitlines()]
    assert events.count("gate") == 3 and events[-1] == "stopped"
    # a restart resumes the cycle count and stops on the same budget without doing anything
    assert run(tmp_path, scripted_config()) == "budget: cycles 3 >= 3"
    assert control.read_state(tmp_path)["totals"]["episodes"] == 24


def test_training_trigger_disk_budget_and_disabled(tmp_path):
    cfg = scripted_config(budgets={"cycles": 1, "disk_mb": 0.001})
    run(tmp_path / "a", cfg)
    state = control.read_state(tmp_path / "a")
    assert state["totals"]["trainings"] == 0 and "disk budget" in state["training_refused"]
    run(tmp_path / "b", scripted_config(training={"min_new_failures": 1000}, budgets={"cycles": 1}))
    hist = control.read_state(tmp_path / "b")["history"][0]
    assert "(< 1000)" in hist["training"]["skipped"]


def test_episode_and_wall_budgets(tmp_path):
    assert run(tmp_path / "e", scripted_config(budgets={"cycles": None, "episodes": 12})).startswith("budget: episodes")
    assert control.read_state(tmp_path / "e")["totals"]["episodes"] == 12  # stops mid-cycle, between chunks
    assert run(tmp_path / "w", scripted_config(budgets={"cycles": None, "wall_time_s": 0.01})).startswith("budget: wall")


def test_tripwire_rolls_back_and_halts_training(tmp_path, monkeypatch):
    """Fake trainer reports rising reward while the (scripted) held-out accuracy is pinned to fall."""
    import tests.daemon_scripted as scripted

    rewards = iter([0.2, 0.5, 0.9, 0.95])
    real_train = scripted.fake_train

    def rising(*a, **k):
        mv = real_train(*a, **k)
        mv.metrics["train/reward_mean"] = next(rewards)
        return mv

    accs = iter([0.6, 0.4, 0.1, 0.6])  # (candidate, current) per gate: the 2nd candidate collapses

    async def fake_eval(self, version_id):
        from agent.cycle import Evaluation
        from agent.evaluate import EvalResult

        self.serve(version_id)
        result = EvalResult(env="arithmetic", version=version_id, n=1, seed=0, max_attempts=2,
                            outcomes={"t": scripted_outcome(next(accs))})
        return Evaluation(version_id, {"arithmetic": result})

    monkeypatch.setattr(scripted, "fake_train", rising)
    monkeypatch.setattr(Daemon, "held_out_evaluation", fake_eval)
    reason = run(tmp_path, scripted_config(budgets={"cycles": 4}, tripwires={"window": 2}))
    state = control.read_state(tmp_path)
    assert reason == "budget: cycles 4 >= 4"
    assert state["training_halted"] and "collapse" in state["training_halted"]
    assert state["totals"]["trainings"] == 2  # halted after the second
    assert state["serving_version"] == "base"  # v0001 (promoted, in the window) rolled back


def test_planted_srt_collapse_under_majority_feedback_trips_and_rolls_back(tmp_path):
    """The issue's acceptance test: with ``feedback = "majority"`` each training makes the scripted policy
    answer a constant on more tasks (tests.daemon_scripted.CollapsingPolicy). Its majority self-reward
    rises towards 1.0 while held-out verifier accuracy falls; the fake trainer reports a flat reward (as
    SFT reports none), so only the collected self-reward can show the divergence."""
    cfg = scripted_config(model="python:tests.daemon_scripted:collapsing_policy", feedback="majority",
                          training={"min_new_failures": 1}, curriculum={"enabled": False}, budgets={"cycles": 5})
    assert run(tmp_path, cfg) == "budget: cycles 5 >= 5"
    state = control.read_state(tmp_path)
    rewards = [h["collected"]["self_reward"] for h in state["history"]]
    truth = [h["collected"]["true_first_try_accuracy"] for h in state["history"]]
    assert rewards[1] > rewards[0] + 0.2 and truth[1] < rewards[1]  # the gap opens once v1 serves
    hist = state["training_history"]
    assert [h["version"] for h in hist] == ["v0001-sft", "v0002-sft", "v0003-sft"]
    assert hist[0]["heldout_accuracy"] > hist[1]["heldout_accuracy"] > hist[2]["heldout_accuracy"]
    assert {h["train_reward"] for h in hist} == {0.5}  # the trainer's own reward shows nothing
    halted = state["training_halted"]
    assert halted and halted.startswith("self-reward of collected episodes") and "collapse" in halted
    assert state["totals"]["trainings"] == 3  # no training after the trip
    assert "training halted by tripwire" in state["history"][-1]["training"]["skipped"]
    assert state["last_gate"]["tripwire"] == halted and not state["last_gate"]["promote"]
    assert state["serving_version"] == "base"  # v0001 was promoted, then rolled back with the window
    from memory.library import ExperienceLibrary
    from tests.daemon_scripted import HashEmbedder

    with ExperienceLibrary(tmp_path, embedder=HashEmbedder()) as lib:
        versions = {v.id: v.status for v in lib.list_model_versions()}
        assert lib.serving_version().id == "base" and versions["v0003-sft"] == "rejected"
        assert versions["v0001-sft"] != "promoted"
        gap = lib.self_reward_agreement()["majority"]
        assert gap["v0001-sft"]["false_positive_rate"] > gap["base"]["false_positive_rate"]
    events = [json.loads(line) for line in control.log_path(tmp_path).read_text().splitlines()]
    [trip] = [e for e in events if e["event"] == "tripwire"]
    assert trip["rolled_back"] == ["v0001-sft"]


def scripted_outcome(acc):
    from trainer.gate import TaskOutcome

    return TaskOutcome(acc >= 0.5, acc >= 0.5)


def _cli(*args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "agent.cli", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def test_cli_status_stop_and_single_instance(tmp_path):
    cfg = tmp_path / "d.toml"
    cfg.write_text(
        'model = "python:tests.daemon_scripted:policy"\nembedder = "python:tests.daemon_scripted:HashEmbedder"\n'
        "tensorboard = false\nepisodes_per_cycle = 4\nconcurrency = 2\n"
        '[[environments]]\nspec = "arithmetic"\n[training]\nenabled = false\n[monitors]\ntasks = 0\n'
    )
    ws = tmp_path / "ws"
    daemon = _cli("daemon", "-w", str(ws), "-c", str(cfg))
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (control.read_state(ws) or {}).get("cycles_completed"):
            time.sleep(0.2)
        assert control.lock_held(ws)
        second = _cli("daemon", "-w", str(ws), "-c", str(cfg))
        assert second.wait(60) == 2 and "another daemon" in second.stdout.read()
        status = subprocess.run([sys.executable, "-m", "agent.cli", "status", "-w", str(ws), "--json"], cwd=ROOT,
                                capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        report = json.loads(status.stdout)
        assert report["running"] and report["cycles_completed"] >= 1 and report["serving_version"] == "base"
        stop = subprocess.run([sys.executable, "-m", "agent.cli", "stop", "-w", str(ws)], cwd=ROOT, capture_output=True,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert stop.returncode == 0
        assert daemon.wait(60) == 0
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGKILL)
    state = control.read_state(ws)
    assert state["status"] == "stopped" and state["stop_reason"] == "stop requested"  # the CLI's request, not the race
    assert not control.lock_held(ws)


def test_bad_config_exits_with_the_key(tmp_path):
    cfg = tmp_path / "d.toml"
    cfg.write_text('[[environments]]\nspec = "arithmetic"\nepisodes_per_cycle = 3\n')  # key inside the table
    proc = _cli("daemon", "-w", str(tmp_path / "ws"), "-c", str(cfg))
    assert proc.wait(60) == 2 and "environments.0.episodes_per_cycle" in proc.stdout.read()


@pytest.mark.slow
def test_real_model_one_cycle(tmp_path):
    """The embedded SmolLM2-135M, real MiniLM index and SFT training: one full cycle (minutes on CPU)."""
    cfg = load_config(ROOT / "docker" / "daemon.toml")
    reason = run(tmp_path, cfg)
    state = control.read_state(tmp_path)
    assert reason == "budget: cycles 1 >= 1" and state["cycles_completed"] == 1
    record = state["history"][0]
    assert record["collected"]["episodes"] == cfg.episodes_per_cycle
    assert "gate" in record or "skipped" in record.get("training", {})
