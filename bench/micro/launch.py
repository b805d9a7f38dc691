"""Wall time of one short SFT run: in this process vs ``accelerate launch`` with N CPU processes.

    .venv/bin/python -m bench.micro.launch [--steps 4] [--model tiny|default] [--processes 2] [--no-write]

Each run is a whole :func:`trainer.train.train` call on the same 16 synthetic arithmetic episodes (a fresh
workspace each): dataset build, model load, the steps, saving and registering. ``train s`` is the trainer's
own ``train()`` time (rank 0's when launched); the rest of the wall time is start-up (for the launch:
accelerate, torchrun and N interpreters importing torch/TRL) and saving. The per-device batch is the same,
so N processes train N times the rows per step (data parallel: same steps, more data). The load average
is printed because on a shared 2-core machine it decides the numbers.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench._report import write_section


def one_run(launcher, model_dir: str, steps: int, embedder) -> tuple[float, float, int]:
    """(wall s, trainer s, world size) of one SFT run in a fresh workspace."""
    from memory.library import ExperienceLibrary
    from trainer.synthetic import mixed_episodes
    from trainer.train import train

    with tempfile.TemporaryDirectory() as tmp, ExperienceLibrary(Path(tmp) / "ws", embedder=embedder) as lib:
        lib.record_many(mixed_episodes(4))
        overrides = dict(report_to=[], save_strategy="no", warmup_steps=0, logging_steps=1, base_model=model_dir,
                         per_device_train_batch_size=2, max_length=256)
        t0 = time.perf_counter()
        mv = train(lib, "sft", steps=steps, overrides=overrides, launcher=launcher)
        return time.perf_counter() - t0, float(mv.metrics["train_seconds"]), int(mv.metrics.get("world_size", 1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--model", default="tiny", help="tiny (random 2-layer Llama) or default (embedded SmolLM2-135M)")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    from memory.embed import default_embedder
    from trainer.launch import make_launcher
    from trainer.models import ensure_embedded_model, make_tiny_model

    model_dir = str(make_tiny_model(Path(tempfile.gettempdir()) / "selfevolve-bench-tiny") if args.model == "tiny"
                    else ensure_embedded_model())
    embedder = default_embedder()
    rows = []
    for name, launcher in (("in-process", make_launcher()),
                           (f"accelerate, {args.processes} CPU processes", make_launcher("accelerate", args.processes))):
        load = os.getloadavg()[0]
        wall, trained, world = one_run(launcher, model_dir, args.steps, embedder)
        rows.append(f"| {name} | {world} | {wall:.1f} | {trained:.1f} | {load:.1f} |")
        print(rows[-1], flush=True)
    body = "\n".join([
        f"## Training launch: {args.steps}-step SFT in-process vs accelerate launch ({args.model} model)", "",
        "A whole `train()` call each (dataset, model load, steps, save, register); per-device batch 2, so the "
        "launched run trains on N times the rows per step.", "",
        "| launcher | processes | wall s | trainer s | load avg (1 min) at start |", "|---|---|---|---|---|", *rows, "",
    ])
    print(body)
    if not args.no_write:
        write_section("launch", body, f"python -m bench.micro.launch --steps {args.steps} --model {args.model} "
                                      f"--processes {args.processes}")


if __name__ == "__main__":
    main()
