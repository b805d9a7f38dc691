"""A sandboxed worker that forks one child per request (child side of :class:`environments.sandbox.Worker`).

The worker process imports a trusted handler and its heavy dependencies once, *before* its jail closes
(``preload``), then reads request lines on stdin. Per request it calls the handler's ``prepare(payload)``
itself (trusted work on trusted fields, e.g. building a dataset, cached across requests) and forks a child
that installs the audit hook, lowers its CPU limit and calls ``handle(payload, prepared)`` on the untrusted
part. The worker waits for the child's one-line result at most ``timeout_s`` and SIGKILLs it after that.
So a hang, a crash or a memory bomb costs one fork, not a worker restart, and nothing an answer does can
outlive its request or change how the next one is scored (each child is a fresh copy of the worker).

Handler files define ``preload() -> None``, ``prepare(payload) -> object`` and ``handle(payload, prepared)
-> JSON-able``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import select
import signal
import sys
import time

MAX_REPLY = 1 << 20


def preload(request: dict):
    spec = importlib.util.spec_from_file_location("_sandbox_handler", request["handler"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.preload()
    return module


def _child(handler, payload: dict, prepared, write_fd: int, cpu_s: int, install_hook) -> None:
    os.close(0)  # the next request lines are the worker's, not this child's
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    install_hook()
    try:
        reply = {"ok": handler.handle(payload, prepared)}
    except BaseException as e:  # noqa: BLE001 - the answer's exceptions, reported
        reply = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    try:
        data = json.dumps(reply).encode()
    except (TypeError, ValueError) as e:
        data = json.dumps({"error": f"unserialisable result: {e}"}).encode()
    while data:
        data = data[os.write(write_fd, data):]
    os._exit(0)


def _collect(pid: int, read_fd: int, timeout_s: float) -> dict:
    deadline, chunks, size = time.monotonic() + timeout_s, [], 0
    while True:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([read_fd], [], [], max(left, 0))
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return {"error": "timeout", "timeout": True}
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        size += len(chunk)
        if size > MAX_REPLY:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return {"error": "the reply was too large"}
        chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if chunks:
        try:
            return json.loads(b"".join(chunks))
        except ValueError:
            return {"error": "malformed reply"}
    if os.WIFSIGNALED(status):
        return {"error": f"crashed with signal {signal.Signals(os.WTERMSIG(status)).name}"}
    return {"error": f"exited with status {os.waitstatus_to_exitcode(status)} without a reply"}


def serve(request: dict, handler, channel, install_hook) -> None:
    """Answer request lines ``{"id", "payload", "timeout_s", "cpu_s"}`` until stdin closes."""
    for line in sys.stdin.buffer:
        message = json.loads(line)
        try:
            prepared = handler.prepare(message["payload"])
        except Exception as e:  # noqa: BLE001 - a bad spec from the parent: say so, keep serving
            channel.send({"id": message["id"], "error": f"prepare failed: {type(e).__name__}: {e}"})
            continue
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            os.close(channel.fd)
            _child(handler, message["payload"], prepared, write_fd, int(message["cpu_s"]), install_hook)
        os.close(write_fd)
        channel.send({"id": message["id"], "event": "started"})  # the parent's clock for this request starts now
        try:
            reply = _collect(pid, read_fd, float(message["timeout_s"]))
        finally:
            os.close(read_fd)
        channel.send({"id": message["id"], **reply})
