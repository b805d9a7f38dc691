"""Seconds per optimizer step: our grpo-reflection vs plain TRL GRPOTrainer, same batch, model and lengths.

    .venv/bin/python -m bench.micro.train [--steps 3]

Both run on the embedded SmolLM2-135M with our CPU config (LoRA r=16, 4 completions per step, 2
generations per prompt here). Plain GRPO gets a free reward (the reflection format score), so the
difference between the two is our hook plus the retry generation; the retry reward's own time is
measured separately and subtracted to get the overhead of our subclass (target <= 1.1x).
"""

from __future__ import annotations

import argparse
import tempfile
import time

from transformers import TrainerCallback
from trl import GRPOTrainer

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=32)
    args = ap.parse_args()
    ds = reflection_dataset(mixed_episodes(4))
    common = dict(max_steps=args.steps, report_to=[], save_strategy="no", max_completion_length=args.tokens,
                  retry_max_new_tokens=args.tokens, per_device_train_batch_size=4, num_generations=2, seed=0)
    results = {}
    for name in ("plain TRL GRPOTrainer", "grpo-reflection (ours)"):
        model, tok = load_model_and_tokenizer("default")
        cfg = config_for("grpo-reflection", tempfile.mkdtemp(), **common)
        timer = StepTimer()
        if name.startswith("plain"):
            tr = GRPOTrainer(model=model, reward_funcs=[format_reward], args=cfg, train_dataset=ds,
                             processing_class=tok, peft_config=lora_config(cfg), callbacks=[timer])
            reward = None
        else:
            reward = TimedRetryReward(max_new_tokens=args.tokens)
            tr = grpo_reflection.build_trainer(model, tok, ds, cfg, callbacks=[timer], retry_reward=reward)
        tr.train()
        steady = timer.times[1:] or timer.times  # drop the first (warm-up) step
        results[name] = (sum(steady) / len(steady), (sum(reward.seconds[1:] or reward.seconds) /
                                                     len(reward.seconds[1:] or reward.seconds)) if reward else 0.0)
    plain = results["plain TRL GRPOTrainer"][0]
    ours, retry = results["grpo-reflection (ours)"]
    rows = "\n".join(f"| {k} | {v[0]:.2f} | {v[1]:.2f} | {v[0] - v[1]:.2f} |" for k, v in results.items())
    body = (
        "## Training: seconds per optimizer step (grpo-reflection vs plain TRL GRPO)\n\n"
        f"SmolLM2-135M, LoRA r=16, 4 completions/step (2 prompts x 2), {args.tokens} new tokens, "
        f"mean of steps 2..{args.steps}.\n\n| trainer | s/step | retry reward s/step | s/step without retry |\n"
        f"|---|---|---|---|\n{rows}\n\nOverhead apart from the retry generation: "
        f"{(ours - retry) / plain:.2f}x (target <= 1.1x).\n"
    )
    print(body)
    write_section("train", body, f"python -m bench.micro.train --steps {args.steps} --tokens {args.tokens}")


if __name__ == "__main__":
    main()
