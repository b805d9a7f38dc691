"""A dying daemon says so, and a stop is prompt (issue 19.3).

- An uncaught exception writes a ``crashed`` event with the traceback and ``status: crashed`` (with
  ``last_crash``) in state.json; ``selfevolve status`` shows it; a restart resumes the cycle.
- ``selfevolve stop`` (stop file + SIGTERM) and a bare stop file both interrupt the sleep between cycles:
  the daemon has saved its state and released the workspace within ~1 s although ``sleep_s`` is 600.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

from agent.daemon import control
from agent.daemon.loop import Daemon
from tests.test_daemon_loop import ROOT, scripted_config


def test_uncaught_exception_writes_crashed_and_restart_resumes(tmp_path):
    cfg = scripted_config(training={"trainer": "python:tests.daemon_scripted:crashing_train"}, budgets={"cycles": 1})
    with pytest.raises(RuntimeError, match="planted trainer bug"):
        asyncio.run(Daemon(tmp_path, cfg).run())
    state = control.read_state(tmp_path)
    assert state["status"] == "crashed" and "planted trainer bug" in state["stop_reason"]
    crash = state["last_crash"]
    assert crash["error"].startswith("RuntimeError: planted trainer bug") and crash["phase"] == "train"
    assert "crashing_train" in crash["traceback"] and "Traceback" in crash["traceback"]
    [event] = [e for e in map(json.loads, control.log_path(tmp_path).read_text().splitlines()) if e["event"] == "crashed"]
    assert "crashing_train" in event["traceback"] and event["error"] == crash["error"]

    from typer.testing import CliRunner

    from agent.cli import app

    result = CliRunner().invoke(app, ["status", "-w", str(tmp_path), "--json"])
    report = json.loads(result.stdout)
    assert report["status"] == "crashed" and report["last_crash"]["error"] == crash["error"]
    # the bug fixed, a restart resumes the interrupted training and finishes the cycle
    assert asyncio.run(Daemon(tmp_path, scripted_config(budgets={"cycles": 1})).run()) == "budget: cycles 1 >= 1"
    state = control.read_state(tmp_path)
    assert state["status"] == "stopped" and state["totals"]["trainings"] == 1
    assert state["last_crash"]["error"] == crash["error"]  # kept as history


def test_crash_before_the_state_is_read_keeps_the_state(tmp_path, monkeypatch):
    """A crash while opening (here: the index repair) must not replace state.json with a blank one."""
    asyncio.run(Daemon(tmp_path, scripted_config(training={"enabled": False}, budgets={"cycles": 1})).run())

    def boom(self):
        raise OSError("planted: disk unreadable")

    monkeypatch.setattr(Daemon, "recover_registry", boom)
    with pytest.raises(OSError, match="planted"):
        asyncio.run(Daemon(tmp_path, scripted_config(training={"enabled": False}, budgets={"cycles": 2})).run())
    state = control.read_state(tmp_path)
    assert state["status"] == "crashed" and state["cycles_completed"] == 1 and len(state["history"]) == 1


def test_stop_file_interrupts_the_sleep_between_cycles(tmp_path):
    cfg = scripted_config(sleep_s=600, training={"enabled": False}, budgets={"cycles": None})

    async def main() -> tuple[str, float]:
        task = asyncio.create_task(Daemon(tmp_path, cfg).run())
        while not (control.read_state(tmp_path) or {}).get("cycles_completed"):
            await asyncio.sleep(0.05)
        t0 = time.monotonic()
        control.request_stop(tmp_path)  # no daemon process holds the lock here: the file alone
        reason = await asyncio.wait_for(task, 30)
        return reason, time.monotonic() - t0

    reason, waited = asyncio.run(main())
    assert reason == "stop requested" and waited < 2.0, waited


def test_cli_stop_interrupts_the_sleep_within_seconds(tmp_path):
    cfg = tmp_path / "d.toml"
    cfg.write_text(
        'model = "python:tests.daemon_scripted:policy"\nembedder = "python:tests.daemon_scripted:HashEmbedder"\n'
        "tensorboard = false\nepisodes_per_cycle = 2\nconcurrency = 2\nsleep_s = 600\n"
        '[[environments]]\nspec = "arithmetic"\n[training]\nenabled = false\n[monitors]\ntasks = 0\n'
    )
    ws = tmp_path / "ws"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    daemon = subprocess.Popen([sys.executable, "-m", "agent.cli", "daemon", "--quiet", "-w", str(ws), "-c", str(cfg)],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not (control.read_state(ws) or {}).get("cycles_completed"):
            assert daemon.poll() is None, daemon.stderr.read()[-3000:]
            time.sleep(0.05)
        time.sleep(0.5)  # well inside the 600 s sleep
        t0 = time.monotonic()
        assert control.request_stop(ws)["signalled"]  # exactly what `selfevolve stop` does
        while control.lock_held(ws) and time.monotonic() - t0 < 30:
            time.sleep(0.02)
        released = time.monotonic() - t0  # state saved, lock released: the workspace is free to restart
        assert daemon.wait(60) == 0  # then the interpreter's own teardown (seconds on a loaded machine)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    state = control.read_state(ws)
    assert state["status"] == "stopped" and state["stop_reason"] == "stop requested"
    assert released < 2.0, f"the daemon took {released:.1f}s to stop"
