"""The sandboxed process: ``python -I [-S] _child.py``, spawned by :mod:`environments.sandbox.process`.

Protocol: the parent writes one JSON request line to stdin; the child enters its jail
(:mod:`_jail`), reports ``{"event": "ready", "layers": [...]}`` on the result descriptor, then runs
its mode and reports JSON lines on that descriptor:

- ``call``: compile the candidate ``source`` and call ``entry(*args)`` for every case, one line per case
  (``{"case": i, "value": <encoded>}`` or ``{"case": i, "error": "<last line>"}``). The expected values
  are never sent here: the parent compares. Whatever the candidate does to this process (patch the
  harness, print, exit early) it can only make cases missing or wrong, never right.
- ``serve``: load a trusted handler file (``prepare(payload)`` / ``handle(payload, state)``) and answer
  request lines from stdin, each handled in a forked child with its own limits (:mod:`_zygote`).

Stdlib only, and everything it needs is imported before the jail closes.
"""

from __future__ import annotations

import builtins
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _codec  # noqa: E402
import _jail  # noqa: E402
import _zygote  # noqa: E402

del sys.path[0]


class Channel:
    """JSON lines on the result descriptor; a closed or broken descriptor ends the process quietly."""

    def __init__(self, fd: int):
        self.fd = fd

    def send(self, message: dict) -> None:
        data = (json.dumps(message, ensure_ascii=True) + "\n").encode()
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except OSError:
            os._exit(3)


def last_line(exc: BaseException) -> str:
    """``Type: message`` (its last line) and the candidate's innermost line number, at most 500 characters."""
    tb, line = exc.__traceback__, getattr(exc, "lineno", None) if isinstance(exc, SyntaxError) else None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<candidate>":
            line = tb.tb_lineno
        tb = tb.tb_next
    text = f"{type(exc).__name__}: {exc}".strip() if str(exc) else type(exc).__name__
    text = text.splitlines()[-1] if text else type(exc).__name__
    return (f"{text} (line {line})" if line else text)[:500]


def run_calls(request: dict, channel: Channel) -> None:
    namespace: dict = {"__name__": "__main__", "__builtins__": builtins}
    try:
        code = compile(request["source"], "<candidate>", "exec")
        exec(code, namespace)  # the whole point of this process: run model-written code, jailed
    except BaseException as e:  # noqa: BLE001 - SystemExit and KeyboardInterrupt are the candidate's too
        channel.send({"event": "load_error", "error": last_line(e)})
        return
    fn = namespace.get(request["entry"])
    if not callable(fn):
        channel.send({"event": "load_error", "error": f"no function named {request['entry']!r} was defined"})
        return
    for i, args in enumerate(request["cases"]):
        try:
            value = fn(*_codec.decode(args))
        except BaseException as e:  # noqa: BLE001
            channel.send({"case": i, "error": last_line(e)})
            continue
        try:
            channel.send({"case": i, "value": _codec.encode(value)})
        except (TypeError, ValueError, RecursionError) as e:
            channel.send({"case": i, "error": f"the return value cannot be compared: {e}"})


def main() -> None:
    request = json.loads(sys.stdin.buffer.readline())
    channel = Channel(request["result_fd"])
    jail = request["jail"]
    serve = request["mode"] == "serve"
    if serve:
        state = _zygote.preload(request)
    layers = _jail.enter(jail)
    mounts = "mounts" in layers  # then /tmp is private to this sandbox too
    workdir = "/sandbox" if mounts else jail["root"]
    writable = [workdir, *(["/tmp"] if mounts else [])]
    readable = list(jail["paths"]) + writable
    hook = request.get("audit_hook", True)
    if serve:
        channel.send({"event": "ready", "layers": layers + (["audit_hook"] if hook else []), "pid": os.getpid()})
        frames = bool(request.get("block_frames", False))
        install = (lambda: _jail.install_audit_hook(writable, readable, block_frames=frames)) if hook else (lambda: None)
        _zygote.serve(request, state, channel, install)
    else:
        if hook:
            _jail.install_audit_hook(writable, readable, block_frames=False)
            layers.append("audit_hook")
        channel.send({"event": "ready", "layers": layers, "pid": os.getpid()})
        run_calls(request, channel)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
