"""A training method is one registration: a toy method declared outside the package trains one step, and
every consumer (config_for, train, the daemon config, the CLI's name check) sees it; plug-ins load from an
entry point; bad registrations fail where they are declared."""

from __future__ import annotations

import sys
import textwrap

import pytest
from datasets import Dataset

from environments.chat import with_system
from trainer.config import SelfEvolveSFTConfig, config_for, lora_config
from trainer.methods import _REGISTRY, get_training_method, method_names, register_training_method
from trainer.synthetic import mixed_episodes
from trainer.train import NotEnoughDataError, train

TOY = "toy-imitate"


def first_answers(episodes, env, config) -> Dataset:
    """Toy rows: imitate every first answer, right or wrong (a method nobody should use, but a real one)."""
    rows = [{"prompt": with_system(ep.attempts[0].solve.messages),
             "completion": [{"role": "assistant", "content": ep.attempts[0].solve.output}], "episode_id": ep.id}
            for ep in episodes if ep.attempts and (env is None or ep.env == env)]
    return Dataset.from_list(rows) if rows else Dataset.from_dict({"prompt": [], "completion": [], "episode_id": []})


@pytest.fixture
def toy():
    from trl import SFTTrainer

    @register_training_method(TOY, config_class=SelfEvolveSFTConfig, dataset=first_answers, min_rows=2,
                              defaults={"max_length": 128, "completion_only_loss": True}, needs="episode",
                              continue_adapter=False)
    def build_trainer(model, tokenizer, dataset, config, callbacks=None):
        return SFTTrainer(model=model, args=config, train_dataset=dataset.select_columns(["prompt", "completion"]),
                          processing_class=tokenizer, peft_config=lora_config(config, model), callbacks=callbacks)

    yield build_trainer
    _REGISTRY.pop(TOY, None)


def test_a_registered_method_trains_one_step_and_every_consumer_sees_it(toy, library, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from agent.daemon.config import parse_config

    library.record_many(mixed_episodes(2))
    mv = train(library, TOY, steps=1, overrides=dict(base_model=str(tiny_model_dir), report_to=[], save_strategy="no",
                                                    per_device_train_batch_size=2, warmup_steps=0))
    assert (mv.id, mv.method, mv.status, mv.metrics["steps"]) == (f"v0001-{TOY}", TOY, "candidate", 1)
    assert len(mv.episode_ids) == 6  # one row per recorded episode
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), mv.adapter_path)
    assert any(p.abs().sum() > 0 for n, p in adapter.named_parameters() if "lora_B" in n)
    assert TOY in method_names() and config_for(TOY, "unused", max_steps=1).max_length == 128
    assert parse_config({"environments": [{"spec": "arithmetic"}], "training": {"method": TOY}}).training.method == TOY


def test_minimum_rows_and_bad_registrations(toy, library):
    library.record(mixed_episodes(1)[0])
    with pytest.raises(NotEnoughDataError, match=rf"no episode in any env \(1 row\(s\), {TOY} needs 2; 1 episodes"):
        train(library, TOY, steps=1)
    with pytest.raises(ValueError, match="already registered"):
        register_training_method(TOY, config_class=SelfEvolveSFTConfig, dataset=first_answers)(lambda *a, **k: None)
    with pytest.raises(ValueError, match=r"defaults \['max_lenght'\] are not fields"):
        register_training_method("typo-demo", config_class=SelfEvolveSFTConfig, dataset=first_answers,
                                 defaults={"max_lenght": 1})(lambda *a, **k: None)
    with pytest.raises(TypeError, match="must subclass a TRL config"):
        register_training_method("dict-demo", config_class=dict, dataset=first_answers)(lambda *a, **k: None)
    with pytest.raises(ValueError, match="unknown training method 'ppo'; choose one of grpo-reflection, grpo, sft, dpo"):
        get_training_method("ppo")
    assert "typo-demo" not in _REGISTRY and "dict-demo" not in _REGISTRY


def test_entry_point_method_is_listed_without_importing_it(tmp_path, monkeypatch):
    pkg = tmp_path / "se_method_demo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        from trainer.config import SelfEvolveSFTConfig
        from trainer.datasets import sft_dataset
        from trainer.methods import register_training_method
        from trainer.sft import build_trainer as sft_trainer

        @register_training_method("ep-demo", config_class=SelfEvolveSFTConfig,
                                  dataset=lambda episodes, env, config: sft_dataset(episodes, env))
        def build_trainer(model, tokenizer, dataset, config, callbacks=None):
            return sft_trainer(model, tokenizer, dataset, config, callbacks=callbacks)
    '''))
    dist = tmp_path / "se_method_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: se-method-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[selfevolve.training_methods]\nep-demo = se_method_demo\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert "ep-demo" in method_names() and "se_method_demo" not in sys.modules
        method = get_training_method("ep-demo")
        assert method.name == "ep-demo" and method.config_class is SelfEvolveSFTConfig
        assert config_for("ep-demo", "unused", max_steps=1).max_length == 1024  # no method defaults: TRL's own
    finally:
        _REGISTRY.pop("ep-demo", None)
        sys.modules.pop("se_method_demo", None)
