"""Fault injection at every step of train → register → gate → promote (issue 19.2).

The daemon runs as a real subprocess with ``SELFEVOLVE_CRASH_AT=<point>`` (trainer/crashpoints.py): it
SIGKILLs itself exactly there, with no cleanup. It is then restarted, and must resume every time: the
chained test kills it once at each point in turn on one workspace (each restart resumes what the previous
kill left and runs on to the next point), then lets it run to its cycle budget. After every kill and at
the end the registry is consistent: every registered version has a complete adapter, every version
directory is registered (or moved aside), ids are unique, and what one kill leaves (a ``.tmp-*``, an
unregistered version directory, two promoted versions) is repaired by the next start. The slow variant kills twice at each point on a fresh workspace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.daemon import control
from trainer.crashpoints import ENV, POINTS

ROOT = Path(__file__).resolve().parents[1]
CYCLES = 3
CONFIG = f"""
model = "python:tests.daemon_scripted:policy"
embedder = "python:tests.daemon_scripted:HashEmbedder"
tensorboard = false
episodes_per_cycle = 8
concurrency = 4
[[environments]]
spec = "arithmetic:digits=1"
[[environments]]
spec = "arithmetic:digits=2"
weight = 2
[training]
trainer = "python:tests.daemon_scripted:fake_train"
method = "sft"
steps = 2
min_new_failures = 1
[gate]
eval_size = 16
primary = "first"
[monitors]
tasks = 0
[budgets]
cycles = {CYCLES}
"""


def run_daemon(ws: Path, cfg: Path, crash_at: str | None, timeout: float = 180) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(ENV, None)
    if crash_at:
        env[ENV] = crash_at
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "daemon", "--quiet", "-w", str(ws), "-c", str(cfg)],
                          cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          timeout=timeout)
    return proc.returncode, proc.stderr


def check_registry(ws: Path) -> tuple[dict[str, str], set[str]]:
    """The registry invariants; returns ({version id: status}, leftovers: .tmp-* and unregistered version dirs)."""
    from memory.library import ExperienceLibrary
    from tests.daemon_scripted import HashEmbedder

    with ExperienceLibrary(ws, embedder=HashEmbedder()) as lib:
        versions = lib.list_model_versions()
        ids = [v.id for v in versions]
        assert len(ids) == len(set(ids)), f"a version id is reused: {ids}"
        for v in versions:
            if v.adapter_path:
                assert (Path(v.adapter_path) / "adapter_config.json").exists(), f"{v.id} registered without adapter"
        statuses = {v.id: v.status for v in versions}
    promoted = sorted(v for v, st in statuses.items() if st == "promoted")
    models = ws / "models"
    names = {p.name for p in models.iterdir()} if models.is_dir() else set()
    leftovers = {n for n in names if n.startswith(".tmp-") or not (n.startswith(".") or n in statuses)}
    if len(promoted) > 1:  # a promote killed between its two writes
        leftovers.add("promoted: " + ", ".join(promoted))
    return statuses, leftovers


def events(ws: Path) -> list[dict]:
    return [json.loads(line) for line in control.log_path(ws).read_text().splitlines()]


def finish_and_check(ws: Path, cfg: Path) -> dict[str, str]:
    rc, err = run_daemon(ws, cfg, None)
    assert rc == 0, f"the restart after the last kill did not finish (exit {rc}): {err[-3000:]}"
    statuses, leftovers = check_registry(ws)
    assert not leftovers, f"left behind after a clean run: {leftovers}"
    state = control.read_state(ws)
    assert state["status"] == "stopped" and state["cycles_completed"] == CYCLES
    from memory.library import ExperienceLibrary
    from tests.daemon_scripted import HashEmbedder

    with ExperienceLibrary(ws, embedder=HashEmbedder()) as lib:
        runs = [r for r in lib.runs() if r.kind == "daemon"]
        assert len(runs) == CYCLES and all(r.finished_at for r in runs)
        assert all(lib.count(run_id=r.id) == 8 for r in runs)  # nothing lost, nothing duplicated
    return statuses


def test_kill_at_every_step_and_restart(tmp_path):
    """One kill at each crash point in turn, on one workspace; every restart resumes (0 wedged)."""
    ws, cfg = tmp_path / "ws", tmp_path / "d.toml"
    cfg.write_text(CONFIG)
    before: set[str] = set()
    for i, point in enumerate(POINTS):
        rc, err = run_daemon(ws, cfg, point)
        assert rc == -9 and f"crashpoint {point}" in err, f"start {i + 1} did not die at {point} (exit {rc}): {err[-3000:]}"
        _, leftovers = check_registry(ws)
        assert not before & leftovers, f"start {i + 1} did not repair what kill {i} left: {before & leftovers}"
        before = leftovers
    statuses = finish_and_check(ws, cfg)
    recovered = [e for e in events(ws) if e["event"] == "registry_recovered"]
    assert any(e["removed_tmp"] for e in recovered)  # killed at register.saved
    assert any(e["adopted"] == ["v0001-sft"] for e in recovered)  # killed at register.renamed: the old wedge
    assert any(e["superseded"] for e in recovered)  # killed at promote.between
    assert statuses["v0001-sft"] == "retired" and len(statuses) >= 3


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_kill_twice_at_one_step_and_restart(tmp_path, point):
    """The same point twice in a row (a crash loop), then a clean restart."""
    ws, cfg = tmp_path / "ws", tmp_path / "d.toml"
    cfg.write_text(CONFIG)
    for _ in range(2):
        rc, err = run_daemon(ws, cfg, point)
        assert rc == -9 and f"crashpoint {point}" in err, err[-3000:]
    finish_and_check(ws, cfg)
