"""The daemon config is checked before the first cycle: each mistake is one line naming the key and the fix.

Before these checks a ``training.overrides`` the trainer refuses (``lora_r = 0``) crashed after a full
collection cycle (and on every restart), a ``training.env`` naming no configured env meant training never
ran, and a plug-in or ``hf:`` path that does not exist failed only when first used.
"""

from __future__ import annotations

import pytest

from agent.daemon.config import ConfigError, parse_config
from agent.daemon.preflight import check_training

MINIMAL = {"environments": [{"spec": "arithmetic"}]}


def _error(data) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    return str(e.value)


def test_training_env_must_be_a_configured_env():
    msg = _error({**MINIMAL, "training": {"env": "countdown"}})
    assert "training.env" in msg and "arithmetic" in msg and "Value error" not in msg
    msg = _error({**MINIMAL, "training": {"env": "arithmtic"}})
    assert "training.env" in msg


def test_training_env_matches_by_canonical_spec():
    cfg = parse_config({"environments": [{"spec": "arithmetic"}], "training": {"env": "arithmetic:digits=1"}})
    assert cfg.training.env == "arithmetic"  # digits=1 is the default: the same env, as episodes record it


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("model", "python:no_such_module_xyz:policy", "no_such_module_xyz"),
        ("model", "python:tests.daemon_scripted:no_such_factory", "no_such_factory"),
        ("embedder", "python:no_such_module_xyz:Emb", "no_such_module_xyz"),
        ("model", "hf:/no/such/model/dir", "/no/such/model/dir"),
    ],
)
def test_missing_plugins_and_model_dirs_name_the_key(key, value, needle):
    msg = _error({**MINIMAL, key: value})
    assert msg.splitlines()[1].strip().startswith(f"{key}:") and needle in msg


def test_missing_trainer_plugin_names_the_key():
    msg = _error({**MINIMAL, "training": {"trainer": "python:no_such_module_xyz:train"}})
    assert "training.trainer" in msg and "no_such_module_xyz" in msg


def test_existing_plugins_and_model_dir_pass(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    cfg = parse_config({**MINIMAL, "model": f"hf:{tmp_path}", "embedder": "python:tests.daemon_scripted:HashEmbedder",
                        "training": {"trainer": "python:tests.daemon_scripted:fake_train"}})
    assert cfg.model == f"hf:{tmp_path}"


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [({"lora_r": 0}, "lora_r"), ({"lora_rank": 8}, "lora_rank"), ({"learning_rate": "fast"}, "learning_rate")],
)
def test_training_overrides_checked_against_the_method_config(overrides, needle):
    cfg = parse_config({**MINIMAL, "training": {"overrides": overrides}})
    with pytest.raises(ConfigError) as e:
        check_training(cfg)
    msg = str(e.value)
    assert msg.startswith("training.overrides") and needle in msg and "\n" not in msg


def test_good_overrides_pass():
    check_training(parse_config({**MINIMAL, "training": {"overrides": {"lora_r": 8, "learning_rate": 2e-4}}}))


def test_daemon_refuses_bad_overrides_before_collecting(tmp_path):
    from typer.testing import CliRunner

    from agent.cli import app

    path = tmp_path / "d.toml"
    path.write_text('model = "python:tests.daemon_scripted:policy"\n'
                    'embedder = "python:tests.daemon_scripted:HashEmbedder"\ntensorboard = false\n'
                    '[[environments]]\nspec = "arithmetic"\n[training.overrides]\nlora_r = 0\n')
    r = CliRunner().invoke(app, ["daemon", "--workspace", str(tmp_path / "ws"), "--config", str(path)])
    assert r.exit_code == 2 and "training.overrides" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "ws").exists()
