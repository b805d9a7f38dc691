"""Control files under ``<workspace>/daemon/``: the lock, pid, state, stop request and JSON-lines log.

- ``lock``: an ``flock`` held for the daemon's lifetime (one daemon per workspace; the kernel releases it
  on any exit, kill -9 included, so a stale lock never blocks a restart).
- ``pid``: the holder's pid, for ``selfevolve stop`` (signalled only while the lock is really held).
- ``state.json``: the loop's durable state, always replaced atomically (write temp, fsync, os.replace).
- ``stop``: a stop request the loop checks between steps (``selfevolve stop`` writes it and sends SIGTERM).
- ``log.jsonl``: one JSON object per event.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import time
from pathlib import Path
from typing import Any


class DaemonAlreadyRunning(RuntimeError):
    """Another daemon holds this workspace's lock."""


def control_dir(workspace: str | Path) -> Path:
    path = Path(workspace) / "daemon"
    path.mkdir(parents=True, exist_ok=True)
    return path


def state_path(workspace: str | Path) -> Path:
    return control_dir(workspace) / "state.json"


def log_path(workspace: str | Path) -> Path:
    return control_dir(workspace) / "log.jsonl"


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_state(workspace: str | Path) -> dict[str, Any] | None:
    path = state_path(workspace)
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def append_log(workspace: str | Path, event: str, **fields: Any) -> None:
    line = json.dumps({"t": time.time(), "event": event, **fields}, default=str)
    with log_path(workspace).open("a", encoding="utf-8") as f:
        f.write(line + "\n")


class WorkspaceLock:
    """``with WorkspaceLock(ws):`` — exclusive, non-blocking; raises DaemonAlreadyRunning naming the pid."""

    def __init__(self, workspace: str | Path) -> None:
        self.dir = control_dir(workspace)
        self.fd: int | None = None

    def acquire(self) -> WorkspaceLock:
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES):
                pid = read_pid(self.dir.parent)
                raise DaemonAlreadyRunning(
                    f"another daemon (pid {pid or '?'}) is running on workspace {self.dir.parent}: "
                    f"stop it with `selfevolve stop --workspace {self.dir.parent}` or use another workspace"
                ) from None
            raise
        self.fd = fd
        (self.dir / "pid").write_text(str(os.getpid()))
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            if read_pid(self.dir.parent) == os.getpid():
                (self.dir / "pid").unlink()
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> WorkspaceLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_held(workspace: str | Path) -> bool:
    """True if some process holds the workspace lock (probed with a non-blocking shared lock)."""
    path = control_dir(workspace) / "lock"
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def read_pid(workspace: str | Path) -> int | None:
    try:
        return int((control_dir(workspace) / "pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def request_stop(workspace: str | Path, reason: str = "stop requested") -> dict[str, Any]:
    """Write the stop request and SIGTERM the daemon if it is running. Returns what was done."""
    (control_dir(workspace) / "stop").write_text(json.dumps({"t": time.time(), "reason": reason}))
    pid = read_pid(workspace)
    running = lock_held(workspace)
    signalled = False
    if running and pid is not None and pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        signalled = True
    return {"running": running, "pid": pid, "signalled": signalled}


def stop_requested(workspace: str | Path) -> str | None:
    path = control_dir(workspace) / "stop"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text()).get("reason", "stop requested")
    except (json.JSONDecodeError, OSError):
        return "stop requested"


def clear_stop(workspace: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (control_dir(workspace) / "stop").unlink()


def disk_usage_mb(path: str | Path) -> float:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total / 1e6
