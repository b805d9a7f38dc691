"""``train()``: select data from memory, build the dataset, run the TRL trainer, save, register a candidate.

    selfevolve train --method grpo-reflection --env countdown --steps 50
    python -c "from trainer.train import train; print(train('.selfevolve', 'sft', steps=5))"

Design decisions
- The new version's parent is the version being served; GRPO and DPO continue training the parent's
  adapter (a chain of versions accumulates), SFT starts a fresh adapter on the base (STaR fine-tunes from
  the base model each iteration). A saved adapter is always a delta on the base model.
- Each run lives in ``<workspace>/runs/train-<id>/``: TRL checkpoints (``checkpoint-N``, every
  ``save_steps``), TensorBoard logs, the exact dataset (``dataset/``) and ``meta.json``. ``resume=True``
  picks the newest unfinished run of the method, reloads its dataset and continues from its last
  checkpoint with TRL's ``resume_from_checkpoint``.
- The trainer reads memory and writes the registry; it never imports ``agent``.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from memory.records import ModelVersion

from . import datasets as D
from . import registry
from .config import METHODS, config_for

ProgressFn = Callable[[int, int, dict[str, float]], None]
MIN_ROWS = {"grpo-reflection": 1, "grpo": 1, "sft": 1, "dpo": 1}
_MODULES = {"grpo-reflection": "trainer.grpo_reflection", "grpo": "trainer.grpo", "sft": "trainer.sft",
            "dpo": "trainer.dpo"}


class NotEnoughDataError(ValueError):
    """Memory has too few usable episodes for the method (the message says what to run first)."""


def build_dataset(method: str, episodes: list, env: str | None = None, reformat: bool = False):
    """The dataset of ``method`` from ``episodes``, or NotEnoughDataError naming the command to run.

    ``reformat`` (sft only): also train on first attempts that were right but malformed, with the answer
    put into the required format (:func:`trainer.datasets.sft_dataset`)."""
    where = f"env {env}" if env else "any env"
    run_hint = f"run `selfevolve run --env {env or 'ENV'} --episodes 64` first"
    if method == "grpo-reflection":
        ds, what = D.reflection_dataset(episodes, env), "episode with a failed first attempt, a reflection and a retry"
    elif method == "grpo":
        ds, what = D.first_attempt_dataset(episodes, env), "episode"
    elif method == "sft":
        ds = D.sft_dataset(episodes, env, reformat=reformat)
        what = "successful episode" + (" (nor a first attempt its env could reformat into one)" if reformat else "")
    elif method == "dpo":
        ds, what = D.dpo_dataset(episodes, env), "task with both a successful and a failed attempt/reflection"
    else:
        raise ValueError(f"unknown training method {method!r}; choose one of {', '.join(METHODS)}")
    if len(ds) < MIN_ROWS[method]:
        dropped = D.dropped_unlabelled(episodes, env) if method in ("grpo", "grpo-reflection") else 0
        if dropped:
            run_hint = (f"{dropped} self-reward episode(s) (rubric/critique feedback) have no pseudo-label for the "
                        f"{method} reward and were dropped; train them with sft or dpo, or collect with "
                        f"--feedback majority or verifier; else {run_hint}")
        raise NotEnoughDataError(f"no {what} in {where} ({len(episodes)} episodes in memory): {run_hint}")
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


def _open_library(workspace_or_lib: Any):
    if isinstance(workspace_or_lib, str | Path):
        from memory.library import ExperienceLibrary

        lib = ExperienceLibrary(workspace_or_lib)
        return lib, Path(workspace_or_lib)
    workspace = getattr(workspace_or_lib, "workspace", None)
    if workspace is None:
        raise TypeError("train() needs a workspace path or a library with a .workspace attribute")
    return workspace_or_lib, Path(workspace)


def _unfinished_run(workspace: Path, lib: Any, method: str) -> Path | None:
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
    for key in ("reward", "retry_success_rate", "first_try_success", "loss", "rewards/accuracies", "kl"):
        values = [h[key] for h in steps if key in h]
        if values:
            metrics[f"train/{key}_mean"] = sum(values) / len(values)
            metrics[f"train/{key}_last"] = values[-1]
    final = next((h for h in reversed(log_history) if "train_loss" in h), {})
    if "train_loss" in final:
        metrics["train_loss"] = final["train_loss"]
    return metrics


def train(
    workspace_or_lib: Any,
    method: str,
    steps: int = 10,
    env: str | None = None,
    overrides: dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
    resume: bool = False,
    gpu: bool = False,
) -> ModelVersion:
    """Train ``method`` for ``steps`` optimizer steps on memory's episodes; register and return the candidate."""
    if method not in METHODS:
        raise ValueError(f"unknown training method {method!r}; choose one of {', '.join(METHODS)}")
    if steps <= 0:
        raise ValueError(f"steps must be > 0 (got {steps})")
    from datasets import load_from_disk
    from peft import PeftModel

    from .models import load_model_and_tokenizer

    lib, workspace = _open_library(workspace_or_lib)
    run_dir = _unfinished_run(workspace, lib, method) if resume else None
    if resume and run_dir is None:
        raise FileNotFoundError(
            f"no unfinished `{method}` run with a checkpoint under {workspace / 'runs'}: start one without --resume"
        )
    if run_dir is not None:
        meta = json.loads((run_dir / "meta.json").read_text())
        version_id, dataset = meta["version_id"], load_from_disk(str(run_dir / "dataset"))
        parent = lib.get_model_version(meta["parent"]) if meta["parent"] else lib.serving_version()
        env = meta.get("env", env)
    else:
        parent, dataset = lib.serving_version(), None
        version_id = registry.next_version_id(lib, method)
        run_dir = workspace / "runs" / f"train-{version_id}"

    config = config_for(method, output_dir=str(run_dir), gpu=gpu, max_steps=steps, env=env, **(overrides or {}))
    if dataset is None:  # a fresh run: select from memory, then keep the exact dataset beside the checkpoints
        dataset = build_dataset(method, lib.episodes(env=env), env, reformat=getattr(config, "reformat_answers", False))
        run_dir.mkdir(parents=True, exist_ok=True)
        dataset.save_to_disk(str(run_dir / "dataset"))
        meta = {"version_id": version_id, "parent": parent.id, "method": method, "env": env, "steps": steps,
                "overrides": overrides or {}, "started_at": time.time()}
        (run_dir / "meta.json").write_text(json.dumps(meta, indent=2))

    base_model = parent.base_model if parent.base_model else config.base_model
    if config.base_model != "default":
        base_model = config.base_model
    continue_adapter = method != "sft" and parent.adapter_path and config.use_lora
    model, tokenizer = load_model_and_tokenizer(base_model)
    if continue_adapter:
        model = PeftModel.from_pretrained(model, parent.adapter_path, is_trainable=True)
    model.train()

    module = importlib.import_module(_MODULES[method])
    callbacks = [ProgressCallback(progress)] if progress else []
    trainer = module.build_trainer(model, tokenizer, dataset, config, callbacks=callbacks)
    t0 = time.time()
    trainer.train(resume_from_checkpoint=True if resume else None)
    metrics = _summarise(trainer.state.log_history, len(dataset), time.time() - t0)
    metrics["steps"] = trainer.state.global_step

    def save(path: Path) -> None:
        trainer.model.save_pretrained(str(path))
        tokenizer.save_pretrained(str(path))

    return registry.register_candidate(
        lib, workspace, version_id, save, parent=parent.id, method=method, base_model=base_model,
        episode_ids=D.episode_ids(dataset), metrics=metrics,
        note=f"trained {trainer.state.global_step} steps on {len(dataset)} rows" + (f" of {env}" if env else ""),
    )
