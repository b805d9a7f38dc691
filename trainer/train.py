"""``train()``: select data from memory, build the dataset, run the TRL trainer, save, register a candidate.

    selfevolve train --method grpo-reflection --env countdown --steps 50
    selfevolve train --method sft --steps 4 --launcher accelerate --num-processes 2
    python -c "from trainer.train import train; print(train('.selfevolve', 'sft', steps=5))"

Design decisions
- What a method is (config, dataset builder, trainer builder, minimum rows) is its registration in
  :mod:`trainer.methods`; this module runs any registered method the same way.
- The new version's parent is the version being served; methods with ``continue_adapter`` (GRPO, DPO)
  train the parent's adapter further (a chain of versions accumulates), the others (SFT) start a fresh
  adapter on the base (STaR fine-tunes from the base model each iteration). A saved adapter is always a
  delta on the base model.
- Each run lives in ``<workspace>/runs/train-<id>/``: TRL checkpoints (``checkpoint-N``, every
  ``save_steps``), TensorBoard logs, the exact dataset (``dataset/``) and ``meta.json``. ``resume=True``
  picks the newest unfinished run of the method, reloads its dataset and continues from its last
  checkpoint with TRL's ``resume_from_checkpoint``.
- ``launcher`` (:mod:`trainer.launch`): the trainer runs in this process (the default) or under
  ``accelerate launch`` in N processes (:mod:`trainer.launched`). Either way this process selects the
  data, writes the run dir and registers the candidate; launched, rank 0 saves the adapter it copies.
- The trainer reads memory and writes the registry; it never imports ``agent``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from memory.protocol import Library
from memory.records import Episode, ModelVersion

from . import datasets as D
from . import registry
from .config import config_for
from .launch import Launcher
from .methods import TrainingMethod, get_training_method

ProgressFn = Callable[[int, int, dict[str, float]], None]


class NotEnoughDataError(ValueError):
    """Memory has too few usable episodes for the method (the message says what to run first)."""


def build_dataset(method: str | TrainingMethod, episodes: Sequence[Episode], env: str | None = None, config: Any = None):
    """The dataset of ``method`` from ``episodes``, or NotEnoughDataError naming the command to run.

    ``config`` is the method's config (e.g. SFT's ``reformat_answers``); None means the builder's defaults."""
    m = get_training_method(method) if isinstance(method, str) else method
    ds = m.dataset(episodes, env, config)
    if len(ds) < m.min_rows:
        where = f"env {env}" if env else "any env"
        run_hint = f"run `selfevolve run --env {env or 'ENV'} --episodes 64` first"
        why = m.empty_hint(episodes, env, m.name) if m.empty_hint else None
        if why:
            run_hint = f"{why}; else {run_hint}"
        found = f"{len(ds)} row(s), {m.name} needs {m.min_rows}; " if m.min_rows > 1 else ""
        raise NotEnoughDataError(f"no {m.describe_rows(config)} in {where} ({found}{len(episodes)} episodes in memory): {run_hint}")
    return ds


class ProgressCallback(TrainerCallback):
    """Calls ``progress(step, max_steps, last_logs)`` after every optimizer step and log."""

    def __init__(self, progress: ProgressFn) -> None:
        self.progress, self.logs = progress, {}

    def on_step_end(self, args, state, control, **kwargs):
        self.progress(state.global_step, state.max_steps, self.logs)

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs = {k: v for k, v in (logs or {}).items() if isinstance(v, int | float)}
        self.progress(state.global_step, state.max_steps, self.logs)


def _open_library(workspace_or_lib: str | Path | Library) -> tuple[Library, Path]:
    if isinstance(workspace_or_lib, str | Path):
        from memory.library import ExperienceLibrary

        return ExperienceLibrary(workspace_or_lib), Path(workspace_or_lib)
    return workspace_or_lib, Path(workspace_or_lib.workspace)


def _unfinished_run(workspace: Path, lib: Library, method: str) -> Path | None:
    registered = {v.id for v in lib.list_model_versions()}
    runs = sorted((workspace / "runs").glob(f"train-v*-{method}"))
    for run in reversed(runs):
        vid = run.name.removeprefix("train-")
        if vid not in registered and (run / "meta.json").exists() and any(run.glob("checkpoint-*")):
            return run
    return None


def _summarise(log_history: list[dict], n_rows: int, seconds: float) -> dict[str, float]:
    metrics: dict[str, float] = {"train_rows": n_rows, "train_seconds": round(seconds, 1)}
    steps = [h for h in log_history if "loss" in h]
    # "kl" is logged by TRL's GRPO when beta > 0; the daemon's collapse tripwire reads train/kl_*.
    # dynamic/*: trainer.dynamic_sampling's per-step share of all-equal reward groups (R3's zero-gradient check).
    for key in ("reward", "retry_success_rate", "first_try_success", "loss", "rewards/accuracies", "kl",
                "dynamic/zero_variance_share", "dynamic/kept_groups", "dynamic/empty_steps"):
        values = [h[key] for h in steps if key in h]
        if values:
            metrics[f"train/{key}_mean"] = sum(values) / len(values)
            metrics[f"train/{key}_last"] = values[-1]
    final = next((h for h in reversed(log_history) if "train_loss" in h), {})
    if "train_loss" in final:
        metrics["train_loss"] = final["train_loss"]
    return metrics


@dataclass
class _Run:
    """Where a training run lives and what it trains on (fresh, or read back from an unfinished run)."""

    version_id: str
    run_dir: Path
    parent: ModelVersion
    env: str | None
    dataset: Any = None  # None until built (a fresh run) or loaded (a resumed one)


def _find_run(lib: Library, workspace: Path, method: str, env: str | None, resume: bool) -> _Run:
    if not resume:
        version_id = registry.next_version_id(lib, method, workspace)
        return _Run(version_id, workspace / "runs" / f"train-{version_id}", lib.serving_version(), env)
    run_dir = _unfinished_run(workspace, lib, method)
    if run_dir is None:
        raise FileNotFoundError(
            f"no unfinished `{method}` run with a checkpoint under {workspace / 'runs'}: start one without --resume"
        )
    from datasets import load_from_disk

    meta = json.loads((run_dir / "meta.json").read_text())
    parent = lib.get_model_version(meta["parent"]) if meta["parent"] else lib.serving_version()
    return _Run(meta["version_id"], run_dir, parent, meta.get("env", env), load_from_disk(str(run_dir / "dataset")))


def _build_run_dataset(run: _Run, lib: Library, m: TrainingMethod, config: Any, steps: int,
                       overrides: dict[str, Any] | None) -> None:
    """A fresh run: select from memory, then keep the exact dataset and meta.json beside the checkpoints."""
    run.dataset = build_dataset(m, lib.episodes(env=run.env), run.env, config)
    run.run_dir.mkdir(parents=True, exist_ok=True)
    run.dataset.save_to_disk(str(run.run_dir / "dataset"))
    meta = {"version_id": run.version_id, "parent": run.parent.id, "method": m.name, "env": run.env, "steps": steps,
            "overrides": overrides or {}, "started_at": time.time()}
    (run.run_dir / "meta.json").write_text(json.dumps(meta, indent=2))


def base_model_of(parent: ModelVersion, config: Any) -> str:
    """The base model spec a run trains on: the config's if set, else the parent's, else the default."""
    if config.base_model != "default":
        return config.base_model
    return parent.base_model or config.base_model


def continued_adapter(parent: ModelVersion, m: TrainingMethod, config: Any) -> str | None:
    """The parent's adapter a run trains further (GRPO, DPO with LoRA), or None for a fresh adapter (SFT)."""
    return parent.adapter_path if m.continue_adapter and parent.adapter_path and config.use_lora else None


def load_training_model(base_model: str, adapter_path: str | None) -> tuple[Any, Any]:
    """(model, tokenizer) in train mode: ``base_model``, with ``adapter_path`` loaded trainable if given."""
    from .models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(base_model)
    if adapter_path:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_path, is_trainable=True)
    model.train()
    return model, tokenizer


@dataclass
class _Trained:
    """What a finished trainer leaves for registration, wherever it ran."""

    log_history: list[dict]
    global_step: int
    seconds: float
    save: Callable[[Path], None]
    extra: dict[str, float]


def _train_in_process(run: _Run, m: TrainingMethod, config: Any, base_model: str, progress: ProgressFn | None,
                      resume: bool) -> _Trained:
    model, tokenizer = load_training_model(base_model, continued_adapter(run.parent, m, config))
    trainer = m.build_trainer(model, tokenizer, run.dataset, config, callbacks=[ProgressCallback(progress)] if progress else [])
    t0 = time.time()
    trainer.train(resume_from_checkpoint=True if resume else None)
    seconds = time.time() - t0
    # Every step's logged numbers, for reports that show a curve (the registry keeps only the summary).
    (run.run_dir / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))

    def save(path: Path) -> None:
        trainer.model.save_pretrained(str(path))
        tokenizer.save_pretrained(str(path))

    return _Trained(trainer.state.log_history, trainer.state.global_step, seconds, save, {})


def _train_launched(run: _Run, m: TrainingMethod, launcher: Launcher, spec: dict[str, Any],
                    progress: ProgressFn | None) -> _Trained:
    """The trainer under ``accelerate launch`` (:mod:`trainer.launch`); rank 0 saved, this process registers."""
    import shutil

    from .launch import launch_training

    result = launch_training(launcher, spec, run.run_dir / "launch", progress)

    def save(path: Path) -> None:
        shutil.copytree(result.adapter_dir, path)

    extra = {"world_size": result.world_size, "launch_seconds": round(result.wall_seconds, 1)}
    return _Trained(result.log_history, result.global_step, result.train_seconds, save, extra)


def _launch_spec(run: _Run, m: TrainingMethod, config: Any, base_model: str, steps: int, overrides: dict[str, Any],
                 gpu: bool, resume: bool) -> dict[str, Any]:
    """What :mod:`trainer.launched` needs to rebuild this run's config, model and dataset in every process."""
    module = m.build_trainer.__module__
    if module == "__main__":
        raise ValueError(f"training method {m.name!r} is registered in __main__, which launched processes cannot "
                         "import: register it in a module (or an entry point) to use the accelerate launcher")
    return dict(method=m.name, method_module=module, steps=steps, env=run.env, overrides=overrides, gpu=gpu,
                output_dir=str(run.run_dir), dataset_dir=str(run.run_dir / "dataset"), base_model=base_model,
                adapter_path=continued_adapter(run.parent, m, config), resume=resume)


def train(
    workspace_or_lib: str | Path | Library,
    method: str,
    steps: int = 10,
    env: str | None = None,
    overrides: dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
    resume: bool = False,
    gpu: bool = False,
    launcher: Launcher | None = None,
) -> ModelVersion:
    """Train ``method`` for ``steps`` optimizer steps on memory's episodes (of env spec ``env``, or all);
    register and return the candidate. ``launcher`` (:func:`trainer.launch.make_launcher`) runs the trainer
    under ``accelerate launch`` instead of in this process; registration happens here either way."""
    m = get_training_method(method)
    if steps <= 0:
        raise ValueError(f"steps must be > 0 (got {steps})")
    launcher = launcher or Launcher()
    lib, workspace = _open_library(workspace_or_lib)
    run = _find_run(lib, workspace, method, env, resume)
    if resume and (adopted := registry.adopt_orphan(lib, workspace, run.version_id)) is not None:
        return adopted  # killed after saving the adapter, before registering it: nothing left to train
    overrides = {**launcher.device_overrides(), **(overrides or {})}
    config = config_for(method, output_dir=str(run.run_dir), gpu=gpu, max_steps=steps, env=run.env, **overrides)
    launcher.check_trainer_config(config)
    if run.dataset is None:
        _build_run_dataset(run, lib, m, config, steps, overrides)
    base_model = base_model_of(run.parent, config)
    if launcher.inprocess:
        done = _train_in_process(run, m, config, base_model, progress, resume)
    else:
        spec = _launch_spec(run, m, config, base_model, steps, overrides, gpu, resume)
        done = _train_launched(run, m, launcher, spec, progress)
    metrics = {**_summarise(done.log_history, len(run.dataset), done.seconds), **done.extra, "steps": done.global_step}
    return registry.register_candidate(
        lib, workspace, run.version_id, done.save, parent=run.parent.id, method=method, base_model=base_model,
        episode_ids=D.episode_ids(run.dataset), metrics=metrics,
        note=f"trained {done.global_step} steps on {len(run.dataset)} rows" + (f" of {run.env}" if run.env else "")
        + (f" ({done.extra['world_size']} processes)" if "world_size" in done.extra else ""),
    )
