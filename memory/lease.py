"""The index lease: at most one process per workspace writes the Chroma index.

Design decision: Chroma's embedded client is not built for several processes (each keeps its own HNSW
graph in memory, applies the shared write-ahead log itself and persists segment files), and two
processes that each "repair" what the other just wrote drop each other's collections. So the right to
open the embedded index — or to write and rebuild a server's collections — is an exclusive ``flock`` on
``<workspace>/index.lock``, held for as long as the process keeps the index open. The kernel releases it
on any exit, kill -9 included, so a dead owner never blocks the next one. The holder writes its pid and
command line into the file, so a process that has to wait can say who it waits for.

    python -c "from memory.lease import IndexLease; print(IndexLease('.selfevolve/index.lock').holder())"
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


class IndexLease:
    """An exclusive, non-inherited ``flock`` on one file; ``acquire`` never blocks longer than asked."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.fd: int | None = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(self, wait_s: float = 0.0, poll_s: float = 0.1) -> bool:
        """Take the lease, waiting up to ``wait_s`` seconds; True if this process holds it now."""
        if self.fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": " ".join(sys.argv)[:200],
                                  "since": time.time()}).encode(), 0)
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def holder(self) -> dict[str, Any]:
        """What the current holder wrote about itself (``{}`` if nobody ever held it or it is unreadable)."""
        try:
            return dict(json.loads(self.path.read_text() or "{}"))
        except (OSError, ValueError):
            return {}

    def describe_holder(self) -> str:
        info = self.holder()
        if not info:
            return "another process"
        return f"pid {info.get('pid')} ({info.get('command') or 'unknown command'})"
