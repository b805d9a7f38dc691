"""Seconds per optimizer step: our grpo-reflection vs plain TRL GRPOTrainer, per generation engine.

    .venv/bin/python -m bench.micro.train [--steps 3] [--engines transformers,vllm]

Both run on the embedded SmolLM2-135M with our CPU config (LoRA r=16, 4 completions per step, 2
generations per prompt here). Plain GRPO gets a free reward (the reflection format score), so the
difference between the two is our hook plus the retry generation; the retry reward's own time is
measured separately and subtracted to get the overhead of our subclass (target <= 1.1x).

Engines: ``transformers`` samples with HF ``generate`` on the live model (today's); ``vllm`` samples
the completions and the R3 retries on the vLLM engine with the live weights pushed once per step
(:mod:`trainer.engine_sampling`). Target (issue 16): vllm s/step <= 0.5x transformers at equal work.
Runs alternate (engine order flips per trainer), same seed, same data.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from transformers import TrainerCallback

from bench._report import write_section
from trainer import grpo_reflection
from trainer.config import config_for, lora_config
from trainer.datasets import reflection_dataset
from trainer.models import load_model_and_tokenizer
from trainer.rewards import RetryReward, completion_text, reflection_format_score
from trainer.synthetic import mixed_episodes


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times, self.t = [], None

    def on_step_begin(self, args, state, control, **kw):
        self.t = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.times.append(time.perf_counter() - self.t)


class TimedRetryReward(RetryReward):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.seconds = []

    def __call__(self, *a, **kw):
        t = time.perf_counter()
        try:
            return super().__call__(*a, **kw)
        finally:
            self.seconds.append(time.perf_counter() - t)


def format_reward(prompts, completions, **_):
    return [reflection_format_score(completion_text(c)) for c in completions]


def run_one(name: str, engine: str, ds, common: dict, tokens: int) -> tuple[float, float, float]:
    """(s/step, retry s/step, sync s/step) of one trainer, steps 2.. (the first is warm-up)."""
    model, tok = load_model_and_tokenizer("default")
    cfg = config_for("grpo-reflection", tempfile.mkdtemp(), generation_engine=engine, **common)
    timer = StepTimer()
    if name.startswith("plain"):
        from trainer.grpo import EngineGRPOTrainer

        tr = EngineGRPOTrainer(model=model, reward_funcs=[format_reward], args=cfg, train_dataset=ds,
                               processing_class=tok, peft_config=lora_config(cfg), callbacks=[timer])
        reward = None
    else:
        reward = TimedRetryReward(max_new_tokens=tokens)
        tr = grpo_reflection.build_trainer(model, tok, ds, cfg, callbacks=[timer], retry_reward=reward)
    sync = getattr(tr, "engine_sync", None)
    if sync is not None:  # time the weight pushes
        original = sync.engine.load_weights
        sync.seconds = []

        def timed(*a, **kw):
            t = time.perf_counter()
            try:
                return original(*a, **kw)
            finally:
                sync.seconds.append(time.perf_counter() - t)

        sync.engine.load_weights = timed
    tr.train()
    if sync is not None:
        sync.engine.load_weights = original

    def steady(xs: list[float]) -> float:
        xs = xs[1:] or xs
        return sum(xs) / len(xs) if xs else 0.0

    return steady(timer.times), steady(reward.seconds) if reward else 0.0, steady(getattr(sync, "seconds", []))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--engines", default="transformers,vllm")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    engines = [e for e in args.engines.split(",") if e]
    ds = reflection_dataset(mixed_episodes(4))
    common = dict(max_steps=args.steps, report_to=[], save_strategy="no", max_completion_length=args.tokens,
                  retry_max_new_tokens=args.tokens, per_device_train_batch_size=4, num_generations=2, seed=0)
    results = {}
    for i, name in enumerate(("plain TRL GRPOTrainer", "grpo-reflection (ours)")):
        for engine in engines if i % 2 == 0 else engines[::-1]:
            results[(name, engine)] = run_one(name, engine, ds, common, args.tokens)
            print(name, engine, results[(name, engine)], flush=True)
    rows = "\n".join(f"| {n} | {e} | {v[0]:.2f} | {v[1]:.2f} | {v[2]:.2f} | {v[0] - v[1]:.2f} |"
                      for (n, e), v in results.items())
    lines = [
        "## Training: seconds per optimizer step (grpo-reflection vs plain TRL GRPO, per engine)", "",
        f"SmolLM2-135M, LoRA r=16, 4 completions/step (2 prompts x 2), {args.tokens} new tokens (completion and "
        f"retry), mean of steps 2..{args.steps}. `vllm`: completions and retries sampled on the vLLM engine "
        "(bf16), live weights pushed once per step (the sync column, included in s/step).", "",
        "| trainer | engine | s/step | retry reward s/step | weight sync s/step | s/step without retry |",
        "|---|---|---|---|---|---|", rows, "",
    ]
    for e in engines:
        plain, ours = results[("plain TRL GRPOTrainer", e)], results[("grpo-reflection (ours)", e)]
        lines.append(f"- {e}: overhead of our subclass apart from the retry generation: "
                     f"{(ours[0] - ours[1]) / plain[0]:.2f}x (target <= 1.1x).")
    if "vllm" in engines and "transformers" in engines:
        for n in ("plain TRL GRPOTrainer", "grpo-reflection (ours)"):
            ratio = results[(n, "vllm")][0] / results[(n, "transformers")][0]
            lines.append(f"- {n}: vllm / transformers s/step = {ratio:.2f}x (target <= 0.5x "
                         f"{'✅' if ratio <= 0.5 else '❌'}).")
    body = "\n".join(lines) + "\n"
    print(body)
    if not args.no_write:
        write_section("train", body, f"python -m bench.micro.train --steps {args.steps} --tokens {args.tokens} "
                                     f"--engines {args.engines}")


if __name__ == "__main__":
    main()
