"""The index heals itself and never crashes its caller; one owner per workspace; the pieces on their own.

Fast unit-level checks with the hashing embedder (no model): the guard around native calls, the seal,
the structural HNSW check, orphan clean-up, the lease and guests, the SQLite scan, schema migration.
The end-to-end matrix is tests/test_memory_faults.py, several processes tests/test_memory_concurrency.py.

    .venv/bin/pytest tests/test_memory_heal.py -q
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from memory import health, index
from memory.hnsw_check import check_dir
from memory.keeper import IndexBusy
from memory.lease import IndexLease
from memory.library import ExperienceLibrary
from memory.scan import VectorScan
from memory.schema import SCHEMA_VERSION
from memory.store import Store
from tests.daemon_scripted import HashEmbedder
from tests.memory_factories import make_episode

ENV = "arithmetic"
ROOT = Path(__file__).resolve().parents[1]


class PanicException(BaseException):
    """Stands in for ``pyo3_runtime.PanicException``: Rust panics surface as a BaseException, not an
    Exception (seen here with random bytes in chroma.sqlite3: 3 of 12 seeds; 5 others aborted)."""


@pytest.fixture(autouse=True)
def small_hnsw(monkeypatch: pytest.MonkeyPatch) -> None:
    """HNSW files with data after 16 vectors (Chroma's default keeps up to 1000 in its log)."""
    monkeypatch.setitem(index.HNSW, "sync_threshold", 16)
    monkeypatch.setitem(index.HNSW, "batch_size", 16)


def lib_at(ws: Path) -> ExperienceLibrary:
    return ExperienceLibrary(ws, embedder=HashEmbedder())


def filled(ws: Path, n: int = 40) -> list:
    eps = [make_episode(i, env=ENV, first_success=i % 3 != 0) for i in range(n)]
    with lib_at(ws) as lib:
        lib.record_many(eps)
    return eps


def segment(ws: Path) -> Path:
    (folder,) = [p for p in (ws / "chroma").iterdir() if p.is_dir()]
    return folder


def test_native_panic_in_a_search_rebuilds_and_answers(tmp_path: Path, monkeypatch, caplog) -> None:
    eps = filled(tmp_path)
    lib = lib_at(tmp_path)
    real = lib.index.query
    calls = []

    def panics_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise PanicException("called `Result::unwrap()` on an `Err` value")
        return real(*args, **kwargs)

    monkeypatch.setattr(lib.index, "query", panics_once)
    with caplog.at_level(logging.WARNING, logger="memory"):
        hits = lib.search(eps[5].summary_text(), env=ENV, k=1)
    assert hits[0].episode_id == eps[5].id
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "PanicException" in warnings[0] and "rebuilding it from SQLite" in warnings[0]
    assert lib.index_status()["status"] == "in sync" and lib.count() == 40
    lib.close()


def test_ctrl_c_is_not_taken_for_damage(tmp_path: Path, monkeypatch) -> None:
    filled(tmp_path)
    lib = lib_at(tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(lib.index, "query", interrupted)
    with pytest.raises(KeyboardInterrupt):
        lib.search("What is 10 + 20?", env=ENV, k=1)
    assert not lib.keeper.healed
    lib.close()


def test_a_panic_when_opening_the_directory_rebuilds_it(tmp_path: Path, monkeypatch) -> None:
    eps = filled(tmp_path)
    (tmp_path / "chroma.seal.json").unlink()  # as after a crash: probed, passes, then opening panics
    real = index.chromadb.PersistentClient
    opened = []

    def panics_first(*args, **kwargs):
        opened.append(1)
        if len(opened) == 1:
            raise PanicException("sqlite page corrupt")
        return real(*args, **kwargs)

    monkeypatch.setattr(index.chromadb, "PersistentClient", panics_first)
    with lib_at(tmp_path) as lib:
        assert lib.search(eps[3].summary_text(), env=ENV, k=1)[0].episode_id == eps[3].id
        assert any("opening it failed (PanicException" in line for line in lib.keeper.healed)
    assert (tmp_path / "chroma.broken").is_dir()


def test_deleted_hnsw_folder_is_not_reported_in_sync(tmp_path: Path) -> None:
    eps = filled(tmp_path)
    shutil.rmtree(segment(tmp_path))
    with lib_at(tmp_path) as lib:
        status = lib.index_status()
        assert status["healed"] and "was deleted" in status["healed"][0]
        assert status["status"] == "in sync" and status["envs"][ENV]["in_index"] == 40
        assert lib.search(eps[9].summary_text(), env=ENV, k=1)[0].episode_id == eps[9].id


def test_stats_verifies_vectors_not_a_flag(tmp_path: Path, monkeypatch) -> None:
    filled(tmp_path)
    with lib_at(tmp_path) as lib:
        real = lib.index.vectors
        monkeypatch.setattr(lib.index, "vectors", lambda env, ids: {i: v + 0.5 for i, v in real(env, ids).items()})
        status = lib.index_status()  # every count agrees; only the vectors do not
        assert status["healed"] and "differ from SQLite" in status["healed"][0]


def test_rebuilds_leave_no_orphan_hnsw_folders(tmp_path: Path) -> None:
    filled(tmp_path)
    with lib_at(tmp_path) as lib:
        for _ in range(3):
            lib.reindex(ENV)  # Chroma leaves a dropped collection's folder behind
    assert health.orphans(tmp_path / "chroma") == []
    assert len([p for p in (tmp_path / "chroma").iterdir() if p.is_dir()]) == 1


def test_seal_states(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert health.inspect(ws / "chroma", ws / "chroma.seal.json").state == "fresh"
    filled(ws)
    assert health.inspect(ws / "chroma", ws / "chroma.seal.json").state == "sealed"
    with (segment(ws) / "length.bin").open("r+b") as f:
        f.write(b"\x00\x01")
    verdict = health.inspect(ws / "chroma", ws / "chroma.seal.json")
    assert verdict.state == "changed" and "length.bin changed content" in verdict.detail
    (ws / "chroma.seal.json").unlink()
    assert health.inspect(ws / "chroma", ws / "chroma.seal.json").state == "unsealed"
    lib = lib_at(ws)  # an owner that never closes leaves no seal
    assert not (ws / "chroma.seal.json").exists()
    lib.close()
    assert health.inspect(ws / "chroma", ws / "chroma.seal.json").state == "sealed"


def test_structural_check_finds_what_would_segfault(tmp_path: Path) -> None:
    filled(tmp_path, n=60)
    assert check_dir(tmp_path / "chroma") is None
    data = segment(tmp_path) / "data_level0.bin"
    raw = bytearray(data.read_bytes())
    raw[4:8] = (10**6).to_bytes(4, "little")  # element 0's first neighbour: far past the last element
    raw[0:2] = (1).to_bytes(2, "little")
    data.write_bytes(bytes(raw))
    assert "points past the last element" in check_dir(tmp_path / "chroma")
    data.write_bytes(bytes(raw[: len(raw) // 3]))
    assert "bytes, its" in check_dir(tmp_path / "chroma")


def test_probe_survives_a_segfault(tmp_path: Path, monkeypatch) -> None:
    filled(tmp_path, n=60)
    assert health.probe(tmp_path / "chroma", "ep", timeout_s=120) is None  # a healthy index passes
    crash = tmp_path / "crash.py"  # what Chroma's loader does with a bad data file (rc 139 in-process)
    crash.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    monkeypatch.setattr(health, "PROBE", crash)
    assert health.probe(tmp_path / "chroma", "ep") == "opening it killed the probe process (SIGSEGV)"
    crash.write_text("import time\ntime.sleep(30)\n")
    assert "did not finish" in health.probe(tmp_path / "chroma", "ep", timeout_s=1)


def test_one_owner_guests_search_sqlite_and_owner_catches_up(tmp_path: Path) -> None:
    eps = filled(tmp_path)
    owner, guest = lib_at(tmp_path), lib_at(tmp_path)
    assert owner.owns_index and not guest.owns_index and guest.index is None
    late = make_episode(500, env=ENV)
    guest.record(late)  # SQLite only: the guest never touches Chroma
    assert guest.store.count(unindexed_only=True) == 1
    q = eps[11].summary_text()
    from_sqlite, from_chroma = guest.search(q, env=ENV, k=3), owner.search(q, env=ENV, k=3)
    assert from_sqlite[0].episode_id == from_chroma[0].episode_id == eps[11].id
    assert [round(h.score, 4) for h in from_sqlite] == [round(h.score, 4) for h in from_chroma]
    assert owner.store.count(unindexed_only=True) == 0  # the owner's search caught the guest's row up
    assert guest.search(late.summary_text(), env=ENV, k=1)[0].episode_id == late.id
    status = guest.index_status()
    assert status["owner"] is False and "in use by pid" in status["verified"]
    with pytest.raises(IndexBusy, match="in use by pid"):
        guest.reindex(wait_s=0)
    owner.close()
    assert guest.reindex(wait_s=5) == 41 and guest.owns_index  # the lease is free now: the guest takes over
    guest.close()


def test_last_process_to_leave_indexes_what_is_pending(tmp_path: Path) -> None:
    filled(tmp_path)
    owner, guest = lib_at(tmp_path), lib_at(tmp_path)
    owner.close()
    guest.record_many([make_episode(600 + i, env=ENV) for i in range(3)])
    guest.close()  # the lease is free: the guest takes it, indexes, seals
    assert Store(tmp_path / "experience.db").count(unindexed_only=True) == 0
    assert health.inspect(tmp_path / "chroma", tmp_path / "chroma.seal.json").state == "sealed"


def test_lease_names_its_holder(tmp_path: Path) -> None:
    a, b = IndexLease(tmp_path / "x.lock"), IndexLease(tmp_path / "x.lock")
    assert a.acquire() and not b.acquire(wait_s=0.2)
    assert "pid" in b.describe_holder()
    a.release()
    assert b.acquire()
    b.release()


def test_scan_matches_brute_force_and_sees_rewrites(tmp_path: Path) -> None:
    store = Store(tmp_path / "x.db")
    rng = np.random.default_rng(0)
    eps = [make_episode(i, env=ENV, first_success=i % 2 == 0) for i in range(30)]
    vecs = rng.normal(size=(30, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    store.put_episodes(eps, vecs)
    scan = VectorScan(store)
    q = vecs[4] + 0.3 * vecs[8]
    got = scan.query(q, [ENV], 5, success=True)
    ok = [i for i, e in enumerate(eps) if e.success]
    best = sorted(ok, key=lambda i: -float(vecs[i] @ q))[:5]
    assert [i for i, _ in got] == [eps[i].id for i in best]
    moved = eps[best[0]].model_copy(update={"seconds": 9.0})
    store.put_episodes([moved], -vecs[best[0]][None, :])  # re-recorded elsewhere with a new vector
    assert scan.refresh() == 1
    assert moved.id not in [i for i, _ in scan.query(q, [ENV], 5, success=True)]
    store.close()


def test_v1_workspace_is_migrated_and_embedded_once(tmp_path: Path) -> None:
    db = tmp_path / "experience.db"
    subprocess.run([sys.executable, "-c", V1_WRITER, str(db)], check=True, cwd=ROOT)
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT value FROM meta").fetchone()[0] == "1"
    conn.close()
    with lib_at(tmp_path) as lib:
        assert lib.count() == 3 and lib.store.count(unindexed_only=True) == 0  # embedded and indexed at open
        assert lib.search("What is 11 + 22?", env=ENV, k=1)[0].episode_id == "ep-arithmetic-addition-1"
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT value FROM meta").fetchone()[0] == str(SCHEMA_VERSION)
    assert conn.execute("SELECT count(*) FROM episodes WHERE vector IS NOT NULL").fetchone()[0] == 3


# A schema-1 file as the previous release wrote it (its DDL, three episodes, no vectors).
V1_WRITER = """
import sqlite3, sys, json
from memory.schema import STEPS
from tests.memory_factories import make_episode
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute('CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)')
for sql in STEPS[1]:
    conn.execute(sql)
conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
for i in range(3):
    ep = make_episode(i, env='arithmetic')
    head = ep.model_dump(mode='json', exclude={'attempts'})
    conn.execute('INSERT INTO episodes (id, env, created_at, episode_json, indexed) VALUES (?, ?, ?, ?, 1)',
                 [ep.id, ep.env, ep.created_at, json.dumps(head)])
    for a in ep.attempts:
        conn.execute('INSERT INTO attempts (id, episode_id, idx, attempt_json) VALUES (?, ?, ?, ?)',
                     [f'{ep.id}:{a.index}', ep.id, a.index, a.model_dump_json()])
"""
