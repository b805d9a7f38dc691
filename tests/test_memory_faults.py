"""The fault-injection matrix of the experience library's index (see tests/memory_faults.py).

Every index file (``chroma.sqlite3``, HNSW header, metadata, link lists, lengths, data) × {random bytes,
truncated, deleted} × {``selfevolve run``, ``memory search``, ``memory stats``, daemon start}: the
entry point must succeed and heal the index with one warning line (or fail with one line naming
``selfevolve memory reindex``), never show a traceback or a Rust panic, never crash the process, and
lose no episode (the SQLite rows are counted afterwards). The sealed matrix (damage after a clean close)
runs in full; after an unclean exit (no seal: the child probe decides) the default suite runs the
daemon-start column (a daemon restarted after kill -9), ``-m slow`` the other three.

    .venv/bin/pytest tests/test_memory_faults.py -q            # ≈ 2–4 min on 2 loaded cores
    .venv/bin/pytest tests/test_memory_faults.py -q -m slow    # the unclean-exit matrix in full
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.memory_faults import FAULTS, FILES, OPS, cell_id, cells

ROOT = Path(__file__).resolve().parents[1]
FAST_UNSEALED = ("daemon start",)  # a daemon restarted after kill -9: the realistic unclean exit


def run_matrix(tmp: Path, *extra: str, timeout: float = 1500) -> dict[tuple, dict]:
    """Run the worker once; results by cell, plus ``("died",)`` naming the cell a crash happened in."""
    out = tmp / "results.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-m", "tests.memory_faults", "--out", str(out), *extra], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    results = {tuple(r["cell"]): r for r in map(json.loads, out.read_text().splitlines())} if out.exists() else {}
    if proc.returncode != 0:
        started = [ln.split()[-1] for ln in proc.stdout.splitlines() if ln.startswith("cell ")]
        results[("died",)] = {"rc": proc.returncode, "cell": started[-1] if started else None,
                              "stderr": proc.stderr[-3000:]}
    return results


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple, dict]:
    return run_matrix(tmp_path_factory.mktemp("sealed"))


@pytest.fixture(scope="module")
def unsealed(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple, dict]:
    return run_matrix(tmp_path_factory.mktemp("unsealed"), "--unsealed", "--ops", ",".join(FAST_UNSEALED))


def check(results: dict[tuple, dict], cell: tuple[str, str, str]) -> None:
    died = results.get(("died",))
    assert cell in results, f"the worker died (rc {died and died['rc']}) in cell {died and died['cell']}: {died}"
    r = results[cell]
    assert not r["traceback"] and not r["panic"], f"the user saw a traceback or a Rust panic: {r['warning']}"
    assert r["outcome"] in ("healed", "unaffected", "failed: reindex named"), r
    assert r["warnings"] <= 1, f"more than one warning line: {r['warning']}"
    assert r["lost"] == 0 and r["episodes"] == r["expected_episodes"], f"episodes lost or missing: {r}"
    assert r["in_sync"] and r["found"] and r["in_index"] == r["episodes"], f"the index is not whole again: {r}"


@pytest.mark.parametrize("cell", cells(), ids=cell_id)
def test_damage_after_a_clean_close(sealed, cell) -> None:
    check(sealed, cell)
    assert sealed[cell]["outcome"] == "healed"  # the seal no longer matches: rebuilt without being opened


@pytest.mark.parametrize("cell", [c for c in cells() if c[2] in FAST_UNSEALED], ids=cell_id)
def test_damage_after_an_unclean_exit(unsealed, cell) -> None:
    check(unsealed, cell)


@pytest.mark.slow
def test_unclean_exit_matrix_in_full(tmp_path: Path) -> None:
    results = run_matrix(tmp_path, "--unsealed", "--ops", ",".join(o for o in OPS if o not in FAST_UNSEALED))
    for cell in [c for c in cells() if c[2] not in FAST_UNSEALED]:
        check(results, cell)


def test_matrix_covers_the_issue() -> None:
    assert {"chroma.sqlite3", "header.bin", "index_metadata.pickle", "link_lists.bin", "data_level0.bin"} <= set(FILES)
    assert set(FAULTS) == {"random bytes", "truncated", "deleted"} and len(OPS) == 4
