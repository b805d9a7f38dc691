"""The daemon's TOML config: valid files load, wrong keys/values fail naming the TOML path."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.daemon.config import ConfigError, load_config, load_plugin, parse_config

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = {"environments": [{"spec": "arithmetic"}]}


def test_example_config_loads():
    cfg = load_config(ROOT / "docker" / "daemon.toml")
    assert cfg.budgets.cycles == 1 and [e.spec for e in cfg.environments][0] == "arithmetic:digits=1"


def test_defaults():
    cfg = parse_config(MINIMAL)
    assert cfg.model == "default" and cfg.training.method == "grpo-reflection" and cfg.collect_chunk == cfg.concurrency


def test_unknown_key_names_its_path(tmp_path):
    path = tmp_path / "d.toml"
    path.write_text('[[environments]]\nspec = "arithmetic"\n[training]\nmin_new_failure = 3\n')
    with pytest.raises(ConfigError, match=r"training\.min_new_failure: unknown key"):
        load_config(path)


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({**MINIMAL, "episodes_per_cycle": 0}, "episodes_per_cycle"),
        ({"environments": [{"spec": "arithmetic", "weight": -1}]}, "environments.0.weight"),
        ({"environments": [{"spec": "nosuchenv"}]}, "environments.0.spec"),
        ({"environments": []}, "environments"),
        ({**MINIMAL, "gate": {"margin": 1.5}}, "gate.margin"),
        ({**MINIMAL, "training": {"method": "ppo"}}, "training.method"),
        ({**MINIMAL, "episode": {"max_attempts": 0}}, "episode.max_attempts"),
        ({**MINIMAL, "model": "nonsense:x"}, "model"),
        ({**MINIMAL, "model": "python:nocolon"}, "model"),
        ({**MINIMAL, "feedback": "oracle"}, "unknown feedback source"),
        ({**MINIMAL, "budgets": {"disk_mb": 0}}, "budgets.disk_mb"),
    ],
)
def test_bad_values_name_the_key(data, where):
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        parse_config(data)


def test_bad_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("model = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_plugin_resolution():
    assert callable(load_plugin("python:tests.daemon_scripted:policy"))
    with pytest.raises(ConfigError, match="no attribute"):
        load_plugin("python:tests.daemon_scripted:nope")
