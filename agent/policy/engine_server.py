"""A long-running vLLM OpenAI-compatible server on 127.0.0.1 that short CLI commands attach to.

Decision (startup cost, issue 16): a long-running process (daemon, a benchmark, an experiment script)
builds ONE in-process engine and keeps it (:func:`agent.policy.vllm_engine.get_engine`); a short command
(``selfevolve generate``, a 16-episode ``run``) would pay the engine's load (≈6-40 s here) every time,
so it can instead attach to a server started once: ``selfevolve engine start``, then ``--model engine``
(an :class:`~agent.policy.openai_backend.OpenAIPolicy` on the recorded URL). Nothing attaches silently:
``default`` never turns into a network call.

The server is ``vllm serve`` (``python -m vllm.entrypoints.openai.api_server``) with this CPU's
settings (:func:`serve_env`: OpenMP bound to every allowed core, 1 GiB KV
cache), eager, bf16 where the CPU has it; trained versions are LoRA modules (``--lora-modules
NAME=DIR``), served under their version name. With LoRA on (``--lora`` or ``--runtime-lora``) the server
also takes adapters at run time (``VLLM_ALLOW_RUNTIME_LORA_UPDATING``: ``POST /v1/load_lora_adapter``), which
is how a ``pool:`` policy pushes a promoted version (:mod:`agent.policy.pool_backend`). Its pid, URL and
log live in ``~/.cache/selfevolve/engine.json`` (``$SELFEVOLVE_CACHE``).

    selfevolve engine start [--port 8011] [--lora v3=ws/models/v3/adapter] [--runtime-lora]
    selfevolve engine status
    selfevolve generate "What is 2+3?" --model engine
    selfevolve engine stop
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

SERVED_NAME = "selfevolve-base"


class EngineServerError(ValueError):
    """The engine server could not be started, reached or stopped (the message says what to do)."""


@dataclass
class ServerInfo:
    pid: int
    base_url: str
    model: str  # the served base model name
    model_dir: str
    log: str
    loras: dict[str, str]
    started: float
    runtime_lora: bool = False  # takes adapters at run time (POST /v1/load_lora_adapter)


def serve_env(base: dict[str, str] | None = None, runtime_lora: bool = False) -> dict[str, str]:
    """Environment for a multiprocess ``vllm serve`` on this CPU: bind OpenMP to every allowed core.

    vLLM's ``auto`` binding reserves one core for its scheduler; on 2 cores that halves compute.
    ``runtime_lora`` turns on vLLM's ``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter``.
    """
    env = dict(os.environ if base is None else base)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(str(c) for c in cpus))
    env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    if runtime_lora:
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    return env


def state_file() -> Path:
    from trainer.models import cache_dir

    return cache_dir() / "engine.json"


def read_info(path: Path | None = None) -> ServerInfo | None:
    path = path or state_file()
    try:
        return ServerInfo(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_command(model_dir: str, port: int, loras: dict[str, str], max_lora_rank: int = 64,
                  dtype: str | None = None, runtime_lora: bool = False) -> list[str]:
    """``vllm serve`` argv; LoRA is on when there are static ``loras`` or adapters come at run time."""
    from trainer.models import default_inference_dtype

    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
           "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port),
           "--dtype", dtype or default_inference_dtype(), "--max-model-len", os.environ.get("SELFEVOLVE_VLLM_MAX_MODEL_LEN", "2048"),
           "--max-num-seqs", os.environ.get("SELFEVOLVE_VLLM_MAX_NUM_SEQS", "64"), "--enforce-eager",
           "--disable-log-stats"]
    if loras or runtime_lora:
        cmd += ["--enable-lora", "--max-lora-rank", str(max_lora_rank)]
    if loras:
        cmd += ["--lora-modules", *[f"{name}={path}" for name, path in loras.items()]]
    return cmd


def ready(base_url: str, timeout_s: float = 2.0) -> bool:
    import httpx

    try:
        return httpx.get(f"{base_url}/models", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def start(model: str = "default", port: int | None = None, loras: dict[str, str] | None = None,
          timeout_s: float = 600.0, state: Path | None = None, dtype: str | None = None,
          progress: Callable[[float], None] | None = None, runtime_lora: bool = False,
          env: dict[str, str] | None = None) -> ServerInfo:
    """Start the server (or return the running one) and wait until it answers ``GET /v1/models``.

    With LoRA on (``loras`` given, or ``runtime_lora``) the server also loads adapters at run time.
    ``env`` overrides the environment, e.g. ``VLLM_CPU_OMP_THREADS_BIND`` for servers sharing a machine."""
    from agent.policy.vllm_engine import INSTALL_HINT, vllm_available
    from trainer.models import resolve_model_path

    state = state or state_file()
    running = read_info(state)
    if running is not None and alive(running.pid):
        return running
    if not vllm_available():
        raise EngineServerError(INSTALL_HINT)
    loras = {k: str(Path(v).expanduser().resolve()) for k, v in (loras or {}).items()}
    for name, path in loras.items():
        if not (Path(path) / "adapter_config.json").exists():
            raise EngineServerError(f"--lora {name}={path}: not a PEFT adapter directory (no adapter_config.json)")
    model_dir = str(resolve_model_path(model))
    lora_on = bool(loras) or runtime_lora
    port = port or free_port()
    state.parent.mkdir(parents=True, exist_ok=True)
    log_path = state.with_suffix(".log")
    environment = serve_env({**os.environ, **(env or {})}, runtime_lora=lora_on)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(serve_command(model_dir, port, loras, dtype=dtype, runtime_lora=lora_on), stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=environment, start_new_session=True)
    info = ServerInfo(proc.pid, f"http://127.0.0.1:{port}/v1", SERVED_NAME, model_dir, str(log_path), loras, time.time(),
                      runtime_lora=lora_on)
    state.write_text(json.dumps(asdict(info), indent=2))
    deadline = time.monotonic() + timeout_s
    while not ready(info.base_url):
        if proc.poll() is not None:
            state.unlink(missing_ok=True)
            tail = log_path.read_text()[-1500:] if log_path.exists() else ""
            raise EngineServerError(f"vllm serve exited with {proc.returncode}; see {log_path}:\n{tail}")
        if time.monotonic() > deadline:
            stop(state)
            raise EngineServerError(f"vllm serve did not answer within {timeout_s:.0f} s; see {log_path}")
        if progress is not None:
            progress(time.time() - info.started)
        time.sleep(1.0)
    return info


def stop(state: Path | None = None, timeout_s: float = 30.0) -> bool:
    """Stop the recorded server (SIGTERM to its process group, SIGKILL after ``timeout_s``)."""
    state = state or state_file()
    info = read_info(state)
    if info is None:
        return False
    if alive(info.pid):
        os.killpg(info.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while alive(info.pid) and time.monotonic() < deadline:
            _reap(info.pid)
            time.sleep(0.2)
        if alive(info.pid):
            os.killpg(info.pid, signal.SIGKILL)
            _reap(info.pid)
    state.unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def attach_spec(state: Path | None = None) -> str:
    """The ``openai:`` spec of the running server, or a clear error saying how to start one."""
    info = read_info(state or state_file())
    if info is None or not alive(info.pid):
        raise EngineServerError("no engine server is running: start one with `selfevolve engine start`")
    return f"openai:{info.base_url}#{info.model}"
