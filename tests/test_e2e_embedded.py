"""End to end on the real embedded model (SmolLM2-135M-Instruct), through the real CLI.

The default-suite test runs a few episodes, then checks the experience library counts and finds them,
and that deleting the Chroma directory loses nothing (the index is rebuilt from SQLite). The slow test
walks the whole self-improvement chain: collect → train (R3) → eval → gate → models list.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.embedded


def cli(*args: str, timeout: float = 900) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "agent.cli", *args, "--json"], capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"selfevolve {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


def test_run_remember_search_rebuild(tmp_path):
    ws = str(tmp_path / "ws")
    run = cli("run", "--env", "arithmetic", "--episodes", "6", "--concurrency", "6", "--max-tokens", "48", "-w", ws)
    assert run["episodes"] == 6 and run["errors"] == [] and run["model_version"] == "base"
    assert run["completion_tokens"] > 0 and 0.0 <= run["first_try_accuracy"] <= run["final_accuracy"] <= 1.0

    stats = cli("memory", "stats", "-w", ws)
    assert stats["episodes"] == 6 and stats["index"]["behind"] == 0

    hits = cli("memory", "search", "What is 3 + 4?", "--env", "arithmetic", "-k", "4", "-w", ws)["hits"]
    assert len(hits) == 4 and all(h["env"] == "arithmetic" for h in hits)
    shown = cli("memory", "show", hits[0]["episode_id"], "-w", ws)
    assert shown["attempts"][0]["solve"]["messages"][0]["role"] == "system"  # exact prompts are kept

    shutil.rmtree(os.path.join(ws, "chroma"))
    again = cli("memory", "search", "What is 3 + 4?", "--env", "arithmetic", "-k", "4", "-w", ws)["hits"]
    assert [h["episode_id"] for h in again] == [h["episode_id"] for h in hits]


@pytest.mark.slow
def test_collect_train_eval_gate(tmp_path):
    ws = str(tmp_path / "ws")
    cli("run", "--env", "arithmetic", "--episodes", "32", "--max-tokens", "48", "-w", ws)
    version = cli("train", "--method", "grpo-reflection", "--steps", "1", "--env", "arithmetic", "-w", ws)
    vid = version["id"]
    assert os.path.exists(os.path.join(version["adapter_path"], "adapter_config.json"))
    result = cli("eval", "--model", vid, "--against", "serving", "--apply", "--env", "arithmetic", "-n", "8", "-w", ws)
    assert result["gate"]["n_tasks"] == 8 and result["status"] in ("promoted", "rejected")
    listed = cli("models", "list", "-w", ws)
    row = next(v for v in listed["versions"] if v["id"] == vid)
    assert row["status"] == result["status"] and "gate" in row["note"]
