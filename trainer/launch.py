"""Training under ``accelerate launch``: N processes (DDP on GPUs, or on CPUs over gloo), one registration.

    selfevolve train --method sft --launcher accelerate                           # 2 CPU processes here
    selfevolve train --method grpo-reflection --launcher accelerate --accelerate-config ddp --num-processes 8

Design decisions
- The parent (:func:`trainer.train.train`) does everything that needs the experience library: it picks
  the version id, builds the dataset and writes it into the run dir (``dataset/``), then writes a run spec
  (``launch/spec.json``: method, overrides, base model, the parent's adapter) and runs
  ``python -m accelerate.commands.launch --config_file F --num_processes N -m trainer.launched SPEC``.
  The children never open the library; on success the parent registers the candidate itself, so the
  crash-consistent registry logic (:mod:`trainer.registry`) stays in one process and one place.
- Every rank calls ``Trainer.save_model`` (ZeRO-3 gathers the weights collectively) and only the main
  process writes: the adapter into ``launch/adapter``, ``log_history.json``, ``launch/result.json``.
  Each rank writes ``launch/rank-<i>.json`` (world size, the batches it trained on, a checksum of its
  trainable weights), so a run shows that its ranks saw different data and still ended identical.
- The child's output (both ranks, and accelerate's) is streamed into ``launch/launch.log``; rank 0's
  progress lines drive the caller's ``progress`` callback, so a stop request (the daemon's callback
  raises) terminates the child's process group and TRL's checkpoints let ``resume`` continue. A failed
  launch raises :class:`LaunchError` with the tail of that log; nothing is registered. Each rank watches
  the parent's pid (:func:`watch_parent`) and exits when it is gone (a kill -9 of the daemon), so a
  restarted daemon resuming the run never races the ranks of the killed one.
- A config file is always passed (default: the shipped ``cpu_2proc.yaml`` without a GPU, ``ddp.yaml``
  with one), so a user's ``~/.cache/huggingface/accelerate/default_config.yaml`` never changes a run
  silently. Configs are checked before launching: accelerate's own classes parse them, every
  ``deepspeed_config`` key must be an ``accelerate launch`` option (accelerate ignores unknown ones), and
  a GPU or DeepSpeed config on a machine without them fails with the fix.
- Not here: multi-node launches (``num_machines > 1``: run ``accelerate launch -m trainer.launched`` on
  each node) and DAPO dynamic sampling across processes (its resampling rounds differ per rank).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).with_name("accelerate_configs")
KINDS = ("inprocess", "accelerate")
PROGRESS_MARK = "@@selfevolve-progress "
ENTRY = "trainer.launched"
TAIL_LINES = 40

Spell = Callable[[str], str]  # how the caller names an option: "--num-processes" or "training.num_processes"


class LaunchError(RuntimeError):
    """``accelerate launch`` failed; the message holds the tail of its log (nothing was registered)."""


def shipped_configs() -> dict[str, Path]:
    """The accelerate configs shipped under ``trainer/accelerate_configs/``, by name (``ddp`` → ddp.yaml)."""
    return {p.stem: p for p in sorted(CONFIG_DIR.glob("*.yaml"))}


@dataclass(frozen=True)
class Launcher:
    """How :func:`trainer.train.train` runs the trainer; build a checked one with :func:`make_launcher`."""

    kind: str = "inprocess"
    num_processes: int = 1
    config_file: Path | None = None
    on_gpu: bool = False
    mixed_precision: str = "no"

    @property
    def inprocess(self) -> bool:
        return self.kind == "inprocess"

    def device_overrides(self) -> dict[str, Any]:
        """Trainer config fields the launch decides (the caller's overrides still win)."""
        if self.inprocess:
            return {}
        return {"use_cpu": False, "bf16": self.mixed_precision == "bf16"} if self.on_gpu else {"use_cpu": True}

    def check_trainer_config(self, config: Any) -> None:
        """Refuse trainer settings that cannot run in several processes (the message names the fix)."""
        if self.inprocess or self.num_processes < 2:
            return
        if getattr(config, "dynamic_sampling", False):
            raise ValueError(
                f"dynamic_sampling (DAPO resampling) runs in one process: its resampling rounds differ per rank and "
                f"would hang the {self.num_processes} processes; pass --set dynamic_sampling=false (daemon: "
                "training.overrides.dynamic_sampling = false) or use one process")
        from .engine_sampling import wants_engine

        if wants_engine(config):
            raise ValueError("generation_engine=vllm is single-process here: use the in-process launcher, or set "
                             "generation_engine=transformers (and unset $SELFEVOLVE_ENGINE) with the accelerate launcher")

    def command(self, spec_path: Path) -> list[str]:
        """The ``accelerate launch`` command line running :mod:`trainer.launched` on ``spec_path``."""
        return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(self.config_file),
                "--num_processes", str(self.num_processes), "-m", ENTRY, str(spec_path)]


def make_launcher(kind: str = "inprocess", num_processes: int | None = None, accelerate_config: str | None = None,
                  spell: Spell = str) -> Launcher:
    """A checked :class:`Launcher`; ValueError naming the option (as ``spell`` spells it) and the fix."""
    if kind not in KINDS:
        raise ValueError(f"{spell('launcher')} = {kind!r}: use inprocess (train in this process, the default) or "
                         "accelerate (accelerate launch, N processes)")
    if kind == "inprocess":
        given = [spell(k) for k, v in (("num_processes", num_processes), ("accelerate_config", accelerate_config))
                 if v is not None]
        if given:
            raise ValueError(f"{' and '.join(given)} only apply to the accelerate launcher: set "
                             f"{spell('launcher')} accelerate, or drop {'them' if len(given) > 1 else 'it'}")
        return Launcher()
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"{spell('num_processes')} must be >= 1 (got {num_processes})")
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    path = resolve_config(accelerate_config, gpus, spell)
    cfg = read_config(path, spell)
    on_gpu = _check_runnable(cfg, path, gpus, spell)
    n = num_processes or (cfg.num_processes if cfg.num_processes > 0 else (gpus if on_gpu else 2))
    if on_gpu and n > gpus:
        raise ValueError(f"{spell('num_processes')} = {n} but this machine has {gpus} GPU(s): one process per GPU, "
                         f"so pass {spell('num_processes')} {gpus} or fewer")
    return Launcher("accelerate", n, path, on_gpu, str(cfg.mixed_precision or "no"))


def resolve_config(name_or_path: str | None, gpus: int, spell: Spell = str) -> Path:
    """A shipped config by name (``cpu_2proc``, ``ddp``, ``zero2``, ``zero3``) or a path; the default by machine."""
    shipped = shipped_configs()
    if name_or_path is None:
        return shipped["ddp" if gpus else "cpu_2proc"]
    if name_or_path in shipped:
        return shipped[name_or_path]
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise ValueError(f"{spell('accelerate_config')} {name_or_path}: no such file; pass one of the shipped configs "
                         f"({', '.join(shipped)}) or a file written by `accelerate config`")
    return path.resolve()


def read_config(path: Path, spell: Spell = str) -> Any:
    """``path`` parsed by accelerate's own config classes, its ``deepspeed_config`` keys checked too."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    try:
        cfg = load_config_from_file(str(path))
    except (ValueError, TypeError, KeyError, OSError) as e:  # unknown keys, a bad enum value, unreadable YAML
        raise ValueError(f"{spell('accelerate_config')} {path} is not a valid accelerate config: {e}") from None
    except Exception as e:  # yaml.YAMLError and friends: say which file, not a bare parser trace
        raise ValueError(f"{spell('accelerate_config')} {path} cannot be parsed: {type(e).__name__}: {e}") from None
    options = {a.dest for a in launch_command_parser()._actions}
    unknown = sorted(set(getattr(cfg, "deepspeed_config", None) or {}) - options)
    if unknown:
        raise ValueError(f"{spell('accelerate_config')} {path}: deepspeed_config has unknown key(s) {unknown} "
                         "(accelerate would ignore them silently); see `accelerate launch --help`, DeepSpeed Arguments")
    return cfg


def _check_runnable(cfg: Any, path: Path, gpus: int, spell: Spell) -> bool:
    """Whether ``cfg`` trains on GPUs; ValueError when this launcher or this machine cannot run it."""
    import importlib.util

    kind = getattr(cfg.distributed_type, "value", str(cfg.distributed_type))
    where = f"{spell('accelerate_config')} {path}"
    if cfg.num_machines > 1:
        raise ValueError(f"{where} spans {cfg.num_machines} machines; this launcher runs one node: start "
                         f"`accelerate launch -m {ENTRY} SPEC` on every node yourself (docs/scale.md)")
    if kind not in ("MULTI_GPU", "DEEPSPEED", "FSDP"):
        raise ValueError(f"{where} has distributed_type {kind}, which starts one process here (accelerate runs MULTI_CPU "
                         "through mpirun): use cpu_2proc (N CPU processes through torchrun) or ddp/zero2/zero3")
    if kind == "DEEPSPEED" and importlib.util.find_spec("deepspeed") is None:
        raise ValueError(f"{where} uses DeepSpeed, which is not installed: `pip install deepspeed` on the GPU node "
                         "(it is not a selfevolve dependency), or use ddp")
    on_gpu = kind == "DEEPSPEED" or not cfg.use_cpu
    if on_gpu and not gpus:
        raise ValueError(f"{where} is for GPUs ({kind}, use_cpu: false) and this machine has none: "
                         "use cpu_2proc, or leave the config out")
    return on_gpu


# ----- running the launch ------------------------------------------------------------------------------
@dataclass
class LaunchResult:
    """What the launched trainer left in ``launch/`` (read by the parent, which registers it)."""

    adapter_dir: Path
    log_history: list[dict]
    global_step: int
    train_seconds: float
    world_size: int
    wall_seconds: float
    ranks: list[dict]


def child_env() -> dict[str, str]:
    """The child's environment: offline, unbuffered, and importing the same selfevolve code as this process
    (a checkout or an install), whatever the working directory."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        env.setdefault(key, "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def launch_training(launcher: Launcher, spec: dict[str, Any], launch_dir: Path,
                    progress: Callable[[int, int, dict[str, float]], None] | None = None) -> LaunchResult:
    """Run :mod:`trainer.launched` under ``accelerate launch`` and read back what rank 0 saved."""
    if launch_dir.exists():  # a previous attempt's files must never be mistaken for this one's
        shutil.rmtree(launch_dir)
    launch_dir.mkdir(parents=True)
    spec = {**spec, "launch_dir": str(launch_dir), "parent_pid": os.getpid()}
    spec_path = launch_dir / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    log_path = launch_dir / "launch.log"
    t0 = time.time()
    rc, tail = _stream(launcher.command(spec_path), log_path, progress)
    if rc != 0:
        raise LaunchError(f"accelerate launch ({launcher.num_processes} processes, {launcher.config_file.name}) exited with "
                          f"code {rc}; nothing was registered. Last lines of {log_path}:\n" + "".join(tail))
    result_path = launch_dir / "result.json"
    if not result_path.is_file():
        raise LaunchError(f"accelerate launch exited 0 but rank 0 wrote no {result_path}; see {log_path}:\n" + "".join(tail))
    result = json.loads(result_path.read_text())
    ranks = [json.loads(p.read_text()) for p in sorted(launch_dir.glob("rank-*.json"))]
    return LaunchResult(Path(result["adapter_dir"]), result["log_history"], int(result["global_step"]),
                        float(result["train_seconds"]), int(result["world_size"]), time.time() - t0, ranks)


def progress_report(line: str) -> dict[str, Any] | None:
    """Rank 0's progress report in ``line``, or None. A tqdm bar (``\\r``, no newline) may precede the mark, and
    other output may follow the JSON on the same line; both are skipped.

    >>> progress_report('50%|#####\\r@@selfevolve-progress {"step": 1, "total": 2, "logs": {}} 2.2s/it\\n')["step"]
    1
    >>> progress_report("loading weights\\n") is None
    True
    """
    at = line.find(PROGRESS_MARK)
    if at < 0:
        return None
    try:
        report, _ = json.JSONDecoder().raw_decode(line, at + len(PROGRESS_MARK))
    except json.JSONDecodeError:
        return None
    return report if isinstance(report, dict) and {"step", "total", "logs"} <= set(report) else None


def _stream(cmd: list[str], log_path: Path, progress) -> tuple[int, deque[str]]:
    """Run ``cmd`` in its own process group, every output line into ``log_path``, rank 0's progress lines
    into ``progress``. If ``progress`` raises (a stop request), the whole group is terminated first."""
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    with log_path.open("w", encoding="utf-8") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                env=child_env(), start_new_session=True)
        try:
            for line in proc.stdout or ():
                log.write(line)
                log.flush()
                report = progress_report(line)
                if report is None:
                    tail.append(line)
                elif progress is not None:
                    progress(report["step"], report["total"], report["logs"])
            return proc.wait(), tail
        finally:
            _end(proc)


def watch_parent(pid: int, interval: float = 2.0) -> threading.Thread:
    """In a launched rank: exit (code 143) soon after process ``pid`` (the trainer's parent) is gone.

    The launch runs in its own session, so a kill -9 of the parent (the daemon) would leave N ranks
    training on; the restarted daemon resumes the run from its checkpoint, and must not find them there."""

    def watch() -> None:
        while True:
            time.sleep(interval)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                sys.stderr.write(f"selfevolve: parent process {pid} is gone; stopping rank {os.environ.get('RANK', '0')}\n")
                sys.stderr.flush()
                os._exit(143)
            except PermissionError:  # alive, under another user (a reused pid): keep watching
                pass

    thread = threading.Thread(target=watch, name="selfevolve-parent-watch", daemon=True)
    thread.start()
    return thread


def _end(proc: subprocess.Popen) -> None:
    """Terminate the launch's process group if it is still running (SIGTERM, then SIGKILL after 15 s)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
