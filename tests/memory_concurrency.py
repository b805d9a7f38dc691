"""Several processes on one workspace: writers run real episodes, readers search, for a bounded time.

A *writer* runs the real episode graph (retrieve → solve → critique → verify → reflect → retry →
record) with the scripted arithmetic policy of tests/daemon_scripted.py, in batches, until its time is
up; a *reader* searches (and now and then asks for stats) in a loop. Both use the hashing embedder, so
no model is loaded. Each prints one JSON line: what it did, what failed, and the repairs it made (none
are expected: processes that share a workspace must not take each other's rows for damage).

    python -m tests.memory_concurrency writer WS 8 0    # one process: role, workspace, seconds, seed
    python -m tests.memory_concurrency all WS 8         # 2 writers + 2 readers, then the end state (JSON)
    python -m tests.memory_concurrency all WS 8 --code /work/main   # the same against another checkout

``all`` is how docs/reliability.md measured the code before and after the index lease: the workers
only use the library API that both have (``getattr`` for the rest).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

ENVS = ("arithmetic", "arithmetic:digits=2")
ROOT = Path(__file__).resolve().parents[1]
ROLES = (("writer", 0), ("writer", 1), ("reader", 2), ("reader", 3))


class Failures(logging.Handler):
    """Counts the warnings the library logs (repairs, failed indexing) so the parent can check them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def library(ws: Path):
    from memory.library import ExperienceLibrary
    from tests.daemon_scripted import HashEmbedder

    return ExperienceLibrary(ws, embedder=HashEmbedder())


def ownership(lib) -> tuple[bool | None, list[str]]:
    """Whether this process owned the index at the end, and its repairs (None/[] for a library that
    predates the index lease, so the same worker measures the code before it)."""
    keeper = getattr(lib, "keeper", None)
    return getattr(lib, "owns_index", None), list(getattr(keeper, "healed", []))


async def write(ws: Path, seconds: float, seed: int) -> dict:
    from agent.graph import EpisodeConfig, GraphDeps
    from agent.runner import run_episodes
    from environments import get_environment
    from tests.daemon_scripted import DaemonScriptedPolicy

    lib = library(ws)
    episodes = failed = 0
    errors: list[str] = []
    ids: list[str] = []
    deadline = time.monotonic() + seconds
    batch = 0
    try:
        while time.monotonic() < deadline:
            env = get_environment(ENVS[batch % len(ENVS)])
            tasks = env.sample(4, split="train", seed=seed * 1000 + batch)
            deps = GraphDeps(DaemonScriptedPolicy(), env, EpisodeConfig(max_attempts=2, k=2), lib)
            done, summary = await run_episodes(tasks, deps, concurrency=2, run_id=f"writer-{seed}")
            episodes += len(done)
            ids.extend(e.id for e in done)
            failed += len(summary.errors)
            errors.extend(e.error for e in summary.errors[:3])
            batch += 1
        owner, healed = ownership(lib)
    finally:
        lib.close()
    return {"role": "writer", "episodes": episodes, "failed": failed, "errors": errors[:5], "ids": ids,
            "owner_at_end": owner, "healed": healed}


def read(ws: Path, seconds: float, seed: int) -> dict:
    rng = random.Random(seed)
    lib = library(ws)
    searches = failed = empty = stats = 0
    errors: list[str] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            try:
                a, b = rng.randrange(10), rng.randrange(10)
                hits = lib.search(f"What is {a} + {b}?", env=rng.choice(ENVS), k=3)
                empty += not hits
                searches += 1
                if searches % 10 == 0:
                    lib.stats()
                    stats += 1
            except Exception as e:  # counted and reported: the parent asserts there are none
                failed += 1
                errors.append(f"{type(e).__name__}: {e}")
            time.sleep(0.02)
        owner, healed = ownership(lib)
    finally:
        lib.close()
    return {"role": "reader", "searches": searches, "failed": failed, "empty": empty, "stats": stats,
            "errors": errors[:5], "owner_at_end": owner, "healed": healed}


def launch(ws: Path, seconds: float, code: Path = ROOT) -> list[subprocess.Popen]:
    """Start the four workers at once, importing the library from ``code`` (a checkout)."""
    env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1"}
    return [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), role, str(ws), str(seconds), str(seed)],
                             cwd=code, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for role, seed in ROLES]


def end_state(ws: Path, results: list[dict]) -> dict:
    """Totals of the workers' reports and what the workspace holds, read without opening a library."""
    writers = [r for r in results if r["role"] == "writer"]
    readers = [r for r in results if r["role"] == "reader"]
    conn = sqlite3.connect(f"file:{ws / 'experience.db'}?mode=ro", uri=True)
    total, pending = conn.execute("SELECT count(*), coalesce(sum(indexed = 0), 0) FROM episodes").fetchone()
    conn.close()
    conn = sqlite3.connect(f"file:{ws / 'chroma' / 'chroma.sqlite3'}?mode=ro", uri=True)
    segments = {r[0] for r in conn.execute("SELECT id FROM segments")}
    conn.close()
    orphans = [p for p in (ws / "chroma").iterdir() if p.is_dir() and p.name not in segments]
    return {
        "episodes": sum(r["episodes"] for r in writers), "failed_episodes": sum(r["failed"] for r in writers),
        "searches": sum(r["searches"] for r in readers), "failed_searches": sum(r["failed"] for r in readers),
        "empty_searches": sum(r["empty"] for r in readers), "warnings": sum(len(r["warnings"]) for r in results),
        "sqlite_rows": int(total), "unindexed_rows": int(pending), "orphan_folders": len(orphans),
        "orphan_mb": round(sum(f.stat().st_size for p in orphans for f in p.rglob("*") if f.is_file()) / 1e6, 1),
    }


def main(argv: list[str]) -> int:
    if argv[0] == "all":
        code = Path(argv[argv.index("--code") + 1]) if "--code" in argv else ROOT
        ws = Path(argv[1])
        procs = launch(ws, float(argv[2]), code)
        results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
        print(json.dumps(end_state(ws, results)))
        return 0
    role, ws, seconds, seed = argv[0], Path(argv[1]), float(argv[2]), int(argv[3])
    handler = Failures()
    logging.getLogger("memory").addHandler(handler)
    logging.getLogger("memory").propagate = False
    result = asyncio.run(write(ws, seconds, seed)) if role == "writer" else read(ws, seconds, seed)
    result["warnings"] = handler.lines
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
