"""Each method runs 1-2 optimizer steps on the tiny random model and yields a loadable LoRA adapter that
differs from its init; ``train()`` registers candidates, resumes from a checkpoint, and refuses empty data."""

from __future__ import annotations

import pytest

from trainer import grpo, grpo_reflection
from trainer.config import config_for
from trainer.datasets import first_attempt_dataset, reflection_dataset
from trainer.rewards import RetryReward, completion_text
from trainer.synthetic import correct_text, make_episode, mixed_episodes, tasks, wrong_text
from trainer.train import NotEnoughDataError, train

FAST = dict(report_to=[], save_strategy="no", warmup_steps=0, logging_steps=1)
GRPO_FAST = dict(FAST, max_completion_length=8, retry_max_new_tokens=8, per_device_train_batch_size=4,
                 num_generations=2)


def _lora_b_nonzero(model) -> bool:
    bs = [p for n, p in model.named_parameters() if "lora_B" in n]
    return bool(bs) and any(p.abs().sum() > 0 for p in bs)  # lora_B starts at exactly zero


def _assert_adapter_loads(model, tmp_path, base_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base_dir)), tmp_path / "adapter")
    assert _lora_b_nonzero(reloaded)


def test_grpo_reflection_steps_with_scripted_retry(tiny_model, tiny_model_dir, tmp_path):
    model, tok = tiny_model
    t = tasks(1)[0]
    ds = reflection_dataset([make_episode(t), make_episode(t, reflection="other")])

    def generate(chats):  # retry succeeds iff the sampled reflection has an even number of characters
        return [correct_text(t) if len(c[-2]["content"]) % 2 == 0 else wrong_text(t) for c in chats]

    cfg = config_for("grpo-reflection", str(tmp_path / "run"), max_steps=2, **GRPO_FAST)
    trainer = grpo_reflection.build_trainer(model, tok, ds, cfg, retry_reward=RetryReward(generate=generate))
    trainer.train()
    logs = [h for h in trainer.state.log_history if "retry_success_rate" in h]
    assert logs and all(0.0 <= h["retry_success_rate"] <= 1.0 for h in logs)
    assert _lora_b_nonzero(trainer.model)
    _assert_adapter_loads(trainer.model, tmp_path, tiny_model_dir)


def test_grpo_steps(tiny_model, tiny_model_dir, tmp_path):
    model, tok = tiny_model
    ds = first_attempt_dataset(mixed_episodes(2))

    def length_parity(prompts, completions, **_):
        return [float(len(completion_text(c)) % 2) for c in completions]

    cfg = config_for("grpo", str(tmp_path / "run"), max_steps=2, **GRPO_FAST)
    trainer = grpo.build_trainer(model, tok, ds, cfg, reward_funcs=[length_parity])
    trainer.train()
    assert _lora_b_nonzero(trainer.model)
    _assert_adapter_loads(trainer.model, tmp_path, tiny_model_dir)


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_train_registers_candidate(method, tiny_model_dir, library):
    from peft import PeftModel

    lib = library
    lib.record_many(mixed_episodes(2))
    steps = []
    mv = train(lib, method, steps=2, overrides=dict(FAST, base_model=str(tiny_model_dir), per_device_train_batch_size=2,
                                                    max_length=256),
               progress=lambda step, total, logs: steps.append((step, total)))
    assert mv.id == f"v0001-{method}" and mv.status == "candidate" and mv.parent == "base"
    assert mv.metrics["steps"] == 2 and mv.episode_ids and steps[-1] == (2, 2)
    assert lib.get_model_version(mv.id) == mv
    base = PeftModel.from_pretrained(
        __import__("transformers").AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), mv.adapter_path)
    assert _lora_b_nonzero(base)


def test_crash_then_resume_from_checkpoint(tiny_model_dir, tmp_path, library):
    lib = library
    lib.record_many(mixed_episodes(2))
    overrides = dict(FAST, base_model=str(tiny_model_dir), per_device_train_batch_size=2, max_length=256,
                     save_strategy="steps", save_steps=1)

    def crash_at_2(step, total, logs):
        if step == 2:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        train(lib, "sft", steps=3, overrides=overrides, progress=crash_at_2)
    assert [v.id for v in lib.list_model_versions()] == ["base"]  # nothing half-registered
    run = tmp_path / "ws" / "runs" / "train-v0001-sft"
    assert (run / "checkpoint-1").is_dir()
    mv = train(lib, "sft", steps=3, overrides=overrides, resume=True)
    assert mv.id == "v0001-sft" and mv.metrics["steps"] == 3


def test_not_enough_data_names_the_command(library):
    lib = library
    lib.record(make_episode(tasks(1)[0], first_success=True))
    with pytest.raises(NotEnoughDataError, match="selfevolve run --env arithmetic --episodes 64"):
        train(lib, "grpo-reflection", steps=1, env="arithmetic")
    with pytest.raises(FileNotFoundError, match="without --resume"):
        train(lib, "sft", steps=1, resume=True)


@pytest.mark.slow
@pytest.mark.embedded
def test_grpo_reflection_one_step_on_embedded_model(library):
    lib = library
    lib.record_many(mixed_episodes(2))
    mv = train(lib, "grpo-reflection", steps=1,
               overrides=dict(report_to=[], save_strategy="no", max_completion_length=32, retry_max_new_tokens=32))
    assert mv.metrics["steps"] == 1 and "train/retry_success_rate_mean" in mv.metrics


def _dynamic_run(tiny_model, tmp_path, dynamic: bool):
    """R3 on 6 failures: 4 hopeless (every retry fails), 2 whose retry succeeds iff the reflection's length is
    even. Returns the advantages of every batch that entered the loss, and the trainer."""
    model, tok = tiny_model
    ts = tasks(6, seed=3)
    ds = reflection_dataset([make_episode(t) for t in ts])
    hopeless = {t.question for t in ts[:4]}

    def generate(chats):
        out = []
        for c in chats:
            task = next(t for t in ts if t.question in c[1]["content"])
            ok = task.question not in hopeless and len(c[-2]["content"]) % 2 == 0
            out.append(correct_text(task) if ok else wrong_text(task))
        return out

    cfg = config_for("grpo-reflection", str(tmp_path / f"run-{dynamic}"), max_steps=3, dynamic_sampling=dynamic,
                     dynamic_max_rounds=3, **GRPO_FAST)
    trainer = grpo_reflection.build_trainer(model, tok, ds, cfg, retry_reward=RetryReward(generate=generate))
    seen = []
    compute_loss = trainer.compute_loss

    def recording(model, inputs, *a, **kw):
        seen.append(inputs["advantages"].detach().clone())
        return compute_loss(model, inputs, *a, **kw)

    trainer.compute_loss = recording
    trainer.train()
    return seen, trainer


def _zero_groups(advantages, g=2):
    return int((advantages.view(-1, g).abs().sum(dim=1) == 0).sum())


def test_dynamic_sampling_never_trains_an_all_equal_group(tiny_model, tmp_path):
    seen, trainer = _dynamic_run(tiny_model, tmp_path, dynamic=True)
    logs = [h for h in trainer.state.log_history if "dynamic/zero_variance_share" in h]
    assert seen and logs
    empty = sum(h.get("dynamic/empty_steps", 0) for h in logs)
    trained = [a for a in seen if a.abs().sum() > 0]
    assert len(trained) >= len(seen) - empty and trained, "some step must have trained a varying group"
    assert all(_zero_groups(a) == 0 for a in trained)  # every group in the loss has a gradient
    assert any(h["dynamic/zero_variance_share"] > 0 for h in logs)  # the hopeless failures were drawn ...
    assert sum(h["dynamic/resampled_groups"] for h in logs) > 0  # ... and replaced


def test_without_dynamic_sampling_all_equal_groups_enter_the_loss(tiny_model, tmp_path):
    """The control: TRL's behaviour keeps zero-advantage groups (so the test above can fail)."""
    seen, _ = _dynamic_run(tiny_model, tmp_path, dynamic=False)
    assert sum(_zero_groups(a) for a in seen) > 0


def test_dynamic_sampling_config_is_checked():
    with pytest.raises(ValueError, match="steps_per_generation=1"):
        config_for("grpo-reflection", "/tmp/x", gradient_accumulation_steps=2)
    with pytest.raises(ValueError, match="dynamic_max_rounds"):
        config_for("grpo-reflection", "/tmp/x", dynamic_max_rounds=-1)
