"""Two writer processes (real episodes through the graph) and two readers (searches) on ONE workspace.

They start together on a fresh workspace and run for a bounded time. Afterwards: no failed episode,
no failed search, no repair (no process took another's new rows for damage), every SQLite row indexed
(the last process to leave caught up what the others left pending), no orphan HNSW folder, and the
index verified against SQLite. The slow variant kills the index owner with SIGKILL halfway.

    .venv/bin/pytest tests/test_memory_concurrency.py -q
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from memory import health
from memory.hnsw_check import check_dir
from memory.lease import IndexLease
from tests.memory_concurrency import end_state, launch


def start(ws: Path, seconds: float) -> list[subprocess.Popen]:
    return launch(ws, seconds)


def finish(procs: list[subprocess.Popen], timeout: float = 300) -> list[dict | None]:
    results: list[dict | None] = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        if proc.returncode == -signal.SIGKILL:
            results.append(None)
            continue
        assert proc.returncode == 0, f"a worker exited {proc.returncode}: {err[-3000:]}"
        assert "Traceback" not in err, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def rows(ws: Path) -> tuple[int, int, set[str]]:
    """(episodes, episodes not indexed, ids), read from SQLite directly (no library, no repair)."""
    conn = sqlite3.connect(f"file:{ws / 'experience.db'}?mode=ro", uri=True)
    try:
        total, pending = conn.execute("SELECT count(*), coalesce(sum(indexed = 0), 0) FROM episodes").fetchone()
        ids = {r[0] for r in conn.execute("SELECT id FROM episodes")}
    finally:
        conn.close()
    return int(total), int(pending), ids


def check_end_state(ws: Path, results: list[dict | None], expect_repairs: bool = False) -> dict:
    writers = [r for r in results if r and r["role"] == "writer"]
    readers = [r for r in results if r and r["role"] == "reader"]
    assert sum(r["failed"] for r in writers) == 0, [r["errors"] for r in writers]
    assert sum(r["failed"] for r in readers) == 0, [r["errors"] for r in readers]
    assert all(r["episodes"] > 0 for r in writers) and all(r["searches"] > 0 for r in readers)
    if not expect_repairs:
        assert all(not r["healed"] and not r["warnings"] for r in results if r), [r["warnings"] for r in results if r]
    total, pending, ids = rows(ws)
    assert {i for r in writers for i in r["ids"]} <= ids  # every episode a writer finished is in SQLite
    assert pending == 0, f"{pending} of {total} episodes were left unindexed"
    assert health.orphans(ws / "chroma") == [] and end_state(ws, [r for r in results if r])["orphan_folders"] == 0
    assert (ws / "chroma.seal.json").exists() and check_dir(ws / "chroma") is None
    from memory.library import ExperienceLibrary
    from tests.daemon_scripted import HashEmbedder

    with ExperienceLibrary(ws, embedder=HashEmbedder()) as lib:
        status = lib.index_status()
        assert status["owner"] and status["status"] == "in sync" and not status["healed"], status
        assert sum(e["in_index"] for e in status["envs"].values()) == total
        assert all(e["vectors_match"] for e in status["envs"].values())
    return {"episodes": total, "searches": sum(r["searches"] for r in readers)}


def test_two_writers_two_readers_one_workspace(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    results = finish(start(ws, seconds=8))
    summary = check_end_state(ws, results)
    assert summary["episodes"] >= 8 and summary["searches"] >= 20


@pytest.mark.slow
def test_owner_killed_halfway(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    procs = start(ws, seconds=20)
    deadline = time.time() + 60
    while time.time() < deadline and not IndexLease(ws / "index.lock").holder():
        time.sleep(0.2)
    time.sleep(8)
    pid = IndexLease(ws / "index.lock").holder()["pid"]
    victim = next(p for p in procs if p.pid == pid)
    victim.send_signal(signal.SIGKILL)
    results = finish(procs)
    assert results.count(None) == 1
    check_end_state(ws, results, expect_repairs=True)
