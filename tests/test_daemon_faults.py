"""Fault injection: SIGKILL the daemon (a subprocess) at random moments, restart it, check the invariants.

After every kill: each episode recorded before it is still there exactly once; every registered model
version's adapter directory is complete; the completed-cycle count never goes back. Finally the daemon
runs to its cycle budget and every finished cycle holds exactly ``episodes_per_cycle`` episodes.
The fast variant (default suite) kills 3 times; the slow one 15 times.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.daemon import control

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """
model = "python:tests.daemon_scripted:policy"
embedder = "python:tests.daemon_scripted:HashEmbedder"
tensorboard = false
episodes_per_cycle = 6
concurrency = 2
[[environments]]
spec = "arithmetic:digits=1"
[[environments]]
spec = "arithmetic:digits=2"
[training]
trainer = "python:tests.daemon_scripted:fake_train"
method = "sft"
steps = 3
min_new_failures = 1
[gate]
eval_size = 6
primary = "first"
[monitors]
tasks = 1
k = 2
[budgets]
cycles = {cycles}
"""


def start(ws: Path, cfg: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DAEMON_TEST_DELAY": "0.03", "DAEMON_TEST_TRAIN_DELAY": "0.15"}
    return subprocess.Popen([sys.executable, "-m", "agent.cli", "daemon", "--quiet", "-w", str(ws), "-c", str(cfg)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_started(ws: Path, proc: subprocess.Popen, starts: int, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        log = control.log_path(ws)
        if log.exists() and sum('"event": "started"' in line for line in log.read_text().splitlines()) >= starts:
            return
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited {proc.returncode} before starting: {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    raise AssertionError("daemon did not start in time")


def snapshot(ws: Path) -> tuple[set[str], dict, int]:
    from memory.library import ExperienceLibrary
    from tests.daemon_scripted import HashEmbedder

    with ExperienceLibrary(ws, embedder=HashEmbedder()) as lib:
        ids = [e.id for e in lib.episodes()]
        assert len(ids) == len(set(ids)) == lib.count(), "an episode is duplicated"
        for v in lib.list_model_versions():
            if v.adapter_path:
                assert (Path(v.adapter_path) / "adapter_config.json").exists(), f"{v.id} registered without adapter"
        per_run = {r.id: (lib.count(run_id=r.id), r.finished_at) for r in lib.runs() if r.kind == "daemon"}
    state = control.read_state(ws) or {}
    return set(ids), per_run, state.get("cycles_completed", 0)


def fault_run(tmp_path: Path, kills: int, cycles: int, seed: int) -> None:
    rng = random.Random(seed)
    ws, cfg = tmp_path / "ws", tmp_path / "d.toml"
    cfg.write_text(CONFIG.format(cycles=cycles))
    seen: set[str] = set()
    cycles_done = 0
    for i in range(kills):
        proc = start(ws, cfg)
        try:
            wait_started(ws, proc, i + 1)
            time.sleep(rng.uniform(0.0, 2.5))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        ids, _, done = snapshot(ws)
        assert seen <= ids, f"kill {i}: {len(seen - ids)} recorded episode(s) lost"
        assert done >= cycles_done, "the cycle count went back"
        seen, cycles_done = ids, done
        if done >= cycles:
            break
    proc = start(ws, cfg)
    assert proc.wait(180) == 0, proc.stderr.read()[-3000:]
    ids, per_run, done = snapshot(ws)
    assert seen <= ids and done == cycles
    finished = [n for n, end in per_run.values() if end is not None]
    assert len(finished) == cycles and all(n == 6 for n in finished), per_run
    assert len(ids) == 6 * cycles  # nothing duplicated, nothing extra
    state = control.read_state(ws)
    assert state["status"] == "stopped" and state["stop_reason"] == f"budget: cycles {cycles} >= {cycles}"
    events = [json.loads(x)["event"] for x in control.log_path(ws).read_text().splitlines()]
    assert events.count("started") >= 2


def test_kill9_fast(tmp_path):
    fault_run(tmp_path, kills=3, cycles=2, seed=0)


@pytest.mark.slow
def test_kill9_many(tmp_path):
    fault_run(tmp_path, kills=15, cycles=4, seed=1)


def test_sigterm_mid_training_checkpoints_and_resumes(tmp_path):
    """SIGTERM while the fake trainer runs: exit 0 in phase train; the restart trains and finishes the cycle."""
    ws, cfg = tmp_path / "ws", tmp_path / "d.toml"
    cfg.write_text(CONFIG.format(cycles=1).replace("steps = 3", "steps = 200"))
    proc = start(ws, cfg)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and '"training_started"' not in (
                control.log_path(ws).read_text() if control.log_path(ws).exists() else ""):
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    state = control.read_state(ws)
    assert state["current"]["phase"] == "train" and state["status"] == "stopped"
    assert "training_interrupted" in control.log_path(ws).read_text()
    cfg.write_text(CONFIG.format(cycles=1))
    proc = start(ws, cfg)
    assert proc.wait(120) == 0, proc.stderr.read()[-3000:]
    state = control.read_state(ws)
    assert state["cycles_completed"] == 1 and state["totals"]["trainings"] == 1
