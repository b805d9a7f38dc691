"""Several processes on one workspace: writers run real episodes, readers search, for a bounded time.

A *writer* runs the real episode graph (retrieve → solve → critique → verify → reflect → retry →
record) with the scripted arithmetic policy of tests/daemon_scripted.py, in batches, until its time is
up; a *reader* searches (and now and then asks for stats) in a loop. Both use the hashing embedder, so
no model is loaded. Each prints one JSON line: what it did, what failed, and the repairs it made (none
are expected: processes that share a workspace must not take each other's rows for damage).

    python -m tests.memory_concurrency writer WS 8 0    # role, workspace, seconds, seed
    python -m tests.memory_concurrency reader WS 8 1
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

ENVS = ("arithmetic", "arithmetic:digits=2")


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
        owner = lib.owns_index
        healed = list(lib.keeper.healed)
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
        owner = lib.owns_index
        healed = list(lib.keeper.healed)
    finally:
        lib.close()
    return {"role": "reader", "searches": searches, "failed": failed, "empty": empty, "stats": stats,
            "errors": errors[:5], "owner_at_end": owner, "healed": healed}


def main(argv: list[str]) -> int:
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
