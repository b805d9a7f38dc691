"""The parent side of the sandbox: spawn the jailed child, feed it, read it under caps, kill it, clean up.

One run = one ``python -I -B [-S] _child.py`` in its own session (so its own process group) with a
scrubbed environment, a fresh temp dir as cwd and, as root, an otherwise unused uid. Three pipes come back
(stdout, stderr, a result descriptor of JSON lines), read in one ``select`` loop: more than
``output_bytes`` on stdout/stderr or ``result_bytes`` of results kills the run at once, as does the wall
clock. Afterwards the whole process group is SIGKILLed, and every process still running as the sandbox's
uid (a double-forked daemon that left the group) is killed by a one-line reaper running as that uid; the
temp dir is removed. The child makes itself a jail before it reads untrusted text (:mod:`._jail`).
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .limits import SandboxLimits

CHILD = str(Path(__file__).with_name("_child.py"))
UID_BASE, UID_SPAN = 1_700_000_000, 1 << 24  # far above any uid a real account or container maps
_SYSTEM_PATHS = ("/usr", "/bin", "/lib", "/lib64", "/etc/ld.so.cache")


@functools.cache
def readonly_paths(site: bool) -> tuple[str, ...]:
    """What the jail exposes read-only: the stdlib and system libraries, plus site-packages for a worker."""
    paths = [sysconfig.get_paths()["stdlib"], *_SYSTEM_PATHS]
    if site:
        paths += sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    return tuple(p for p in paths if os.path.lexists(p))


def scrubbed_env(home: str) -> dict[str, str]:
    """The child's whole environment: nothing of the parent's (no tokens, no keys, no paths)."""
    return {
        "PATH": "/usr/bin:/bin", "HOME": home, "TMPDIR": "/tmp", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    }


def pick_uid() -> int | None:
    """A fresh uid for this run when we are root (so it can be dropped to), else ``None``."""
    return UID_BASE + secrets.randbelow(UID_SPAN) if os.geteuid() == 0 else None


def reap_uid(uid: int | None) -> None:
    """SIGKILL every process running as ``uid`` (the sandbox's own: nothing else uses it)."""
    if uid is None:
        return
    subprocess.run(["/bin/sh", "-c", "kill -KILL -1 2>/dev/null; exit 0"], user=uid, group=uid, extra_groups=[],
                   env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, cwd="/", check=False, timeout=10)


def live_processes(uid: int | None) -> list[int]:
    """Pids of live (not zombie) processes running as ``uid`` (none if ``uid`` is None). ~1 ms: a stat per pid."""
    if uid is None:
        return []
    pids = []
    with os.scandir("/proc") as entries:
        for entry in entries:
            try:
                if not entry.name.isdigit() or entry.stat().st_uid != uid:
                    continue
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    state = f.read().rsplit(b")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue  # gone meanwhile
            if state not in (b"Z", b"X"):
                pids.append(int(entry.name))
    return pids


def wait_gone(uid: int | None, timeout_s: float = 5.0) -> bool:
    """Wait until nothing runs as ``uid`` any more (killed processes with big address spaces take a moment)."""
    deadline = time.monotonic() + timeout_s
    while live_processes(uid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@dataclass
class Spawned:
    """A started child: its process, result descriptor, uid and temp root."""

    proc: subprocess.Popen
    result_fd: int
    uid: int | None
    root: str

    def kill(self) -> None:
        """Kill the process group and every process of the sandbox uid; close our end; remove the temp dir."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # already gone
        reap_uid(self.uid)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass  # unkillable (D state): the OS reaps it later; nothing more we can do
        if not wait_gone(self.uid):
            reap_uid(self.uid)  # one more sweep for anything that slipped between the first and now
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()
        try:
            os.close(self.result_fd)
        except OSError:
            pass  # already closed
        shutil.rmtree(self.root, ignore_errors=True)


def spawn(request: dict, limits: SandboxLimits, *, site: bool = False, keep_stdin: bool = False, stderr=None) -> Spawned:
    """Start the child and send ``request`` (its first stdin line). ``site``: give it site-packages.

    ``stderr``: a file for the child's stderr, and then stdout goes to /dev/null (a long-lived worker
    nobody reads from must not block on a full pipe; RLIMIT_FSIZE caps the file). Default: pipes."""
    root = tempfile.mkdtemp(prefix="selfevolve-sandbox-")
    os.chmod(root, 0o755)
    uid = pick_uid()
    read_fd, write_fd = os.pipe()
    cmd = [sys.executable, "-I", "-B", *(() if site else ("-S",)), CHILD]
    home = "/sandbox" if limits.namespaces else root
    try:
        out = subprocess.PIPE if stderr is None else subprocess.DEVNULL
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=stderr or subprocess.PIPE,
                                pass_fds=(write_fd,), cwd=root, env=scrubbed_env(home), start_new_session=True)
    except BaseException:
        os.close(read_fd)
        shutil.rmtree(root, ignore_errors=True)
        raise
    finally:
        os.close(write_fd)
    jail = {"root": root, "paths": list(readonly_paths(site)), "disk_mb": limits.disk_mb, "uid": uid,
            "isolate_network": not limits.network, "namespaces": limits.namespaces, "rlimits": limits.rlimits()}
    message = {**request, "result_fd": write_fd, "jail": jail, "audit_hook": limits.audit_hook}
    spawned = Spawned(proc, read_fd, uid, root)
    try:
        proc.stdin.write((json.dumps(message) + "\n").encode())
        proc.stdin.flush()
        if not keep_stdin:
            proc.stdin.close()
    except BrokenPipeError:
        pass  # the child died at once; the caller sees it exit with nothing sent
    return spawned


@dataclass
class SandboxResult:
    """What came back from one run. ``messages``: the result lines after ``ready``; ``layers``: what was applied;
    ``crash``: a predicate ("crashed with signal SIGSEGV") for the run's abnormal end, if any."""

    messages: list[dict] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    returncode: int | None = None
    timed_out: bool = False
    killed_for: str | None = None  # "wall clock", "stdout over N bytes", ...
    stdout: str = ""
    stderr: str = ""
    wall_s: float = 0.0
    uid: int | None = None  # the uid it ran as (root parent only); nothing else runs as it
    root: str = ""  # the temp dir it ran in (removed by the time this is returned)

    @property
    def crash(self) -> str | None:
        """How the process ended abnormally (a signal, a non-zero status, a kill), or ``None``."""
        if self.killed_for:
            return f"was stopped: {self.killed_for}"
        if self.returncode is not None and self.returncode < 0:
            return f"crashed with signal {signal.Signals(-self.returncode).name}"
        if self.returncode:
            return f"exited with status {self.returncode}"
        return None


def run(request: dict, limits: SandboxLimits, *, site: bool = False) -> SandboxResult:
    """One sandboxed run to completion (or to a limit). Never raises for anything the child does."""
    start = time.monotonic()
    spawned = spawn(request, limits, site=site)
    result = SandboxResult()
    try:
        _pump(spawned, limits, result, start)
    finally:
        spawned.kill()
    result.returncode, result.uid, result.root = spawned.proc.returncode, spawned.uid, spawned.root
    result.wall_s = time.monotonic() - start
    if not result.timed_out and result.returncode == -signal.SIGXCPU:
        # RLIMIT_CPU fired before the wall clock (a busy loop burns CPU as fast as time): the same verdict
        result.timed_out, result.killed_for = True, f"CPU time ({limits.cpu_s:g} s)"
    return result


def _pump(spawned: Spawned, limits: SandboxLimits, result: SandboxResult, start: float) -> None:
    """Read the three pipes until they close, the process exits (plus a grace), or a limit is hit.
    The code's wall clock starts when the child reports ready; until then ``startup_s`` applies."""
    deadline = start + limits.startup_s
    sel = selectors.DefaultSelector()
    names = {spawned.proc.stdout.fileno(): "stdout", spawned.proc.stderr.fileno(): "stderr", spawned.result_fd: "result"}
    for fd in names:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    buffers = {"stdout": bytearray(), "stderr": bytearray(), "result": bytearray()}
    caps = {"stdout": limits.output_bytes, "stderr": limits.output_bytes, "result": limits.result_bytes}
    totals = dict.fromkeys(buffers, 0)
    exited_at: float | None = None
    try:
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                what = f"wall clock ({limits.wall_s:g} s)" if result.layers else f"startup ({limits.startup_s:g} s)"
                result.timed_out, result.killed_for = True, what
                return
            if exited_at is None and spawned.proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > 0.2:
                return  # the process is gone; whatever still holds a pipe is a leftover and gets killed
            for key, _ in sel.select(timeout=min(deadline - now, 0.05)):
                name = names[key.fd]
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    sel.unregister(key.fd)
                    continue
                totals[name] += len(chunk)
                if name != "result" and len(buffers[name]) < caps[name]:
                    buffers[name] += chunk[: caps[name] - len(buffers[name])]
                elif name == "result":
                    buffers[name] += chunk
                if totals[name] > caps[name]:
                    result.killed_for = f"{name} over {caps[name]} bytes"
                    return
                if name == "result":
                    was_ready = bool(result.layers)
                    _take_lines(buffers["result"], result)
                    if result.layers and not was_ready:
                        deadline = time.monotonic() + limits.wall_s
    finally:
        sel.close()
        result.stdout = bytes(buffers["stdout"][: limits.output_bytes]).decode("utf-8", "replace")
        result.stderr = bytes(buffers["stderr"][: limits.output_bytes]).decode("utf-8", "replace")


def _take_lines(buffer: bytearray, result: SandboxResult) -> None:
    """Move complete JSON lines out of ``buffer`` into ``result`` (a malformed line is dropped)."""
    while (end := buffer.find(b"\n")) != -1:
        line = bytes(buffer[:end])
        del buffer[: end + 1]
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if not isinstance(message, dict):
            continue
        if message.get("event") == "ready" and not result.layers:
            result.layers = [str(x) for x in message.get("layers", [])]
        else:
            result.messages.append(message)
