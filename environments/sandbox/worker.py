"""A persistent sandboxed worker for third-party code that is slow to import and fed untrusted text.

    worker = Worker(handler="path/to/handler.py", limits=SandboxLimits(memory_mb=4096), name="reasoning-gym")
    reply = worker.call({"task": ..., "answer": ...}, timeout_s=5)   # {"ok": ...} or {"error": ..., ...}

The worker (:mod:`._zygote`) imports the handler's dependencies once, enters the jail, and forks one child
per request, so one request costs a fork and a pipe round trip instead of an interpreter start plus the
imports. Timeouts are enforced twice: by the worker (SIGKILL of that request's child, the worker lives
on) and here, a few seconds later, as a backstop that kills and restarts the whole worker. A worker that
died (crash, kill) is restarted on the next call. Calls are serialised by a lock (one request at a time).
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import select
import tempfile
import threading
import time

from .limits import SandboxLimits
from .process import Spawned, spawn

BACKSTOP_S = 5.0  # extra seconds the parent waits past a request's own timeout before killing the worker
PREPARE_S = 600.0  # the worker's trusted per-spec setup (building a dataset) before a request's clock starts


class Worker:
    def __init__(self, handler: str, limits: SandboxLimits, name: str, start_timeout_s: float = 120.0):
        self.handler, self.limits, self.name = handler, limits, name
        self.start_timeout_s = start_timeout_s
        self._spawned: Spawned | None = None
        self._buffer = bytearray()
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self.layers: list[str] = []
        self.starts = 0
        atexit.register(self.close)

    # ----- lifecycle -----
    def _start(self) -> None:
        self._stderr = tempfile.TemporaryFile()
        self._spawned = spawn({"mode": "serve", "handler": self.handler}, self.limits, site=True, keep_stdin=True,
                              stderr=self._stderr)
        self._buffer.clear()
        self.starts += 1
        ready = self._read_message(time.monotonic() + self.start_timeout_s)
        if ready is None or ready.get("event") != "ready":
            err = self._stderr_tail()
            self.close()
            raise RuntimeError(f"the {self.name} sandbox worker did not start: {err or 'no output'}")
        self.layers = [str(x) for x in ready.get("layers", [])]

    def close(self) -> None:
        if self._spawned is not None:
            self._spawned.kill()
            self._spawned = None
            self._stderr.close()

    def _stderr_tail(self) -> str:
        self._stderr.seek(0, os.SEEK_END)
        self._stderr.seek(max(0, self._stderr.tell() - 2000))
        lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else ""

    # ----- one request -----
    def call(self, payload: dict, timeout_s: float, cpu_s: int | None = None) -> dict:
        """Handle ``payload`` in a fresh child of the worker. Returns ``{"ok": result}`` or ``{"error": why}``
        (``"timeout": True`` when it ran out of time). Never raises for what the payload does."""
        with self._lock:
            if self._spawned is None or self._spawned.proc.poll() is not None:
                self.close()
                self._start()
            request_id = next(self._ids)
            cpu = cpu_s or max(1, int(timeout_s) + 1)
            line = json.dumps({"id": request_id, "payload": payload, "timeout_s": timeout_s, "cpu_s": cpu}) + "\n"
            try:
                self._spawned.proc.stdin.write(line.encode())
                self._spawned.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                self.close()
                return {"error": "the worker died"}
            deadline = time.monotonic() + PREPARE_S
            while True:
                message = self._read_message(deadline)
                if message is None:  # backstop fired or the worker died: start afresh next time
                    timed_out = time.monotonic() >= deadline
                    self.close()
                    return {"error": "timeout" if timed_out else "the worker died", "timeout": timed_out}
                if message.get("id") != request_id:
                    continue
                if message.get("event") == "started":
                    deadline = time.monotonic() + timeout_s + BACKSTOP_S
                    continue
                return message

    def _read_message(self, deadline: float) -> dict | None:
        fd = self._spawned.result_fd
        while (end := self._buffer.find(b"\n")) == -1:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self._buffer += chunk
            if len(self._buffer) > self.limits.result_bytes:
                return None
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        try:
            message = json.loads(line)
        except ValueError:
            return {}
        return message if isinstance(message, dict) else {}
