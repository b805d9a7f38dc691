"""The training entry every process of ``accelerate launch`` runs: ``python -m trainer.launched SPEC``.

    python -m accelerate.commands.launch --config_file trainer/accelerate_configs/cpu_2proc.yaml \\
        --num_processes 2 -m trainer.launched ws/runs/train-v0001-sft/launch/spec.json

Started by :func:`trainer.launch.launch_training`, which wrote SPEC (JSON) and the dataset; see that
module for the design. Each process rebuilds the same config (:func:`trainer.config.config_for`), loads
the model and the saved dataset, and runs the method's TRL trainer, which accelerate makes a DDP (or
DeepSpeed) run. Nothing here opens the experience library or the registry: the parent registers.

Outputs under ``launch_dir``: ``adapter/`` (``Trainer.save_model``: called on every rank, written by the
main process), ``result.json`` and the run's ``log_history.json`` (main process), and ``rank-<i>.json``
from every rank: world size, distributed type, digests of the batches it trained on, and checksums of
its trainable weights before and after training.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from .launch import PROGRESS_MARK, watch_parent


class ProgressPrinter(TrainerCallback):
    """Prints rank 0's step and last logs as one marked JSON line (the parent turns it into ``progress``)."""

    def __init__(self) -> None:
        self.logs: dict[str, float] = {}

    def _emit(self, state) -> None:
        if state.is_world_process_zero:
            line = json.dumps({"step": state.global_step, "total": state.max_steps, "logs": self.logs})
            print(PROGRESS_MARK + line, flush=True)

    def on_step_end(self, args, state, control, **kwargs):
        self._emit(state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs = {k: v for k, v in (logs or {}).items() if isinstance(v, int | float)}
        self._emit(state)


def weights_checksum(model: Any) -> str:
    """sha256 of the trainable parameters (by name, as float32): equal on two ranks iff their weights are."""
    import torch

    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        if param.requires_grad:
            digest.update(name.encode())
            digest.update(param.detach().to(device="cpu", dtype=torch.float32).numpy().tobytes())
    return digest.hexdigest()


def batch_digest(inputs: dict[str, Any]) -> str:
    """sha256 of a batch's integer tensors (token ids, masks): which rows this rank trained on."""
    import torch

    digest = hashlib.sha256()
    for key in sorted(inputs):
        value = inputs[key]
        if isinstance(value, torch.Tensor) and not value.is_floating_point() and value.ndim > 0:
            digest.update(key.encode())
            digest.update(value.detach().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def record_batches(trainer: Any) -> list[str]:
    """Make ``trainer`` note the digest of every batch it computes a loss on; returns the list it fills."""
    seen: list[str] = []
    compute_loss = trainer.compute_loss

    def noting(model, inputs, *args, **kwargs):
        seen.append(batch_digest(inputs))
        return compute_loss(model, inputs, *args, **kwargs)

    trainer.compute_loss = noting
    return seen


def _cpu_threads() -> None:
    """On CPU, split the cores between the local processes (each would otherwise take all of them)."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if not os.environ.get("SELFEVOLVE_THREADS") and local > 1:
        os.environ["SELFEVOLVE_THREADS"] = str(max(1, (os.cpu_count() or 1) // local))


def _build(spec: dict[str, Any]) -> tuple[Any, Any]:
    """(trainer, config) of the run ``spec`` describes, in this process."""
    from datasets import load_from_disk

    from .config import config_for
    from .methods import get_training_method
    from .train import load_training_model

    importlib.import_module(spec["method_module"])  # a plug-in method registers itself on import
    m = get_training_method(spec["method"])
    config = config_for(spec["method"], output_dir=spec["output_dir"], gpu=spec["gpu"], max_steps=spec["steps"],
                        env=spec["env"], **spec["overrides"])
    model, tokenizer = load_training_model(spec["base_model"], spec["adapter_path"])
    dataset = load_from_disk(spec["dataset_dir"])
    return m.build_trainer(model, tokenizer, dataset, config, callbacks=[ProgressPrinter()]), config


def run(spec: dict[str, Any]) -> None:
    """Train as ``spec`` says; write the adapter, the result and this rank's record into ``launch_dir``."""
    _cpu_threads()
    if spec.get("parent_pid"):
        watch_parent(int(spec["parent_pid"]))
    out = Path(spec["launch_dir"])
    trainer, config = _build(spec)
    state = trainer.accelerator.state
    batches = record_batches(trainer)
    before = weights_checksum(trainer.accelerator.unwrap_model(trainer.model))
    t0 = time.time()
    trainer.train(resume_from_checkpoint=True if spec["resume"] else None)
    seconds = time.time() - t0
    trainer.save_model(str(out / "adapter"))  # collective under ZeRO-3; only the main process writes
    rank = {"rank": state.process_index, "world_size": state.num_processes, "local_rank": state.local_process_index,
            "distributed_type": str(state.distributed_type), "backend": state.backend, "wrote_adapter": trainer.args.should_save,
            "batches": batches, "checksum_before": before,
            "checksum_after": weights_checksum(trainer.accelerator.unwrap_model(trainer.model))}
    (out / f"rank-{state.process_index}.json").write_text(json.dumps(rank, indent=1))
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        log_history = trainer.state.log_history
        Path(config.output_dir, "log_history.json").write_text(json.dumps(log_history, indent=1))
        result = {"adapter_dir": str(out / "adapter"), "log_history": log_history, "global_step": trainer.state.global_step,
                  "train_seconds": seconds, "world_size": state.num_processes}
        (out / "result.json").write_text(json.dumps(result, indent=1))
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m trainer.launched RUN_SPEC.json (written by trainer.launch.launch_training)", file=sys.stderr)
        return 2
    run(json.loads(Path(args[0]).read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
