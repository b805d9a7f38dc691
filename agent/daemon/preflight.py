"""Checks of a daemon config that need the trainer's code, run once before the first cycle.

:func:`agent.daemon.config.parse_config` stays fast (no TRL import: ``selfevolve status`` and the tests
validate configs in milliseconds). What it cannot see is whether ``training.overrides`` suit the chosen
method's config class: an unknown field, a wrong type or a value the config refuses (``lora_r = 0``) used
to surface only when the first training started — after a whole collection cycle, and again on every
restart. :func:`check_training` builds that config now, exactly as :func:`trainer.train.train` will.

Skipped when ``training.trainer`` is a plug-in (it receives the overrides and decides what they mean),
when training is disabled, or when there are no overrides (so a plain config still starts without TRL).
"""

from __future__ import annotations

import tempfile
from dataclasses import MISSING
from pathlib import Path
from typing import Any

from agent.daemon.config import ConfigError, DaemonConfig


def _kind_ok(default: object, value: object) -> bool:
    """Whether ``value`` has the type of the field's default (TRL's dataclasses do not check types)."""
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    return True  # None, lists, enums: left to the config's own checks


def _wrong_types(config_class: type, overrides: dict[str, Any]) -> list[str]:
    fields = config_class.__dataclass_fields__
    out = []
    for key, value in overrides.items():
        f = fields.get(key)
        default = getattr(f, "default", MISSING)
        if f is not None and default is not MISSING and default is not None and not _kind_ok(default, value):
            out.append(f"{key} = {value!r} should be a {type(default).__name__} like its default {default!r}")
    return out


def check_training(cfg: DaemonConfig) -> None:
    """Raise :class:`ConfigError` (one line naming ``training.overrides`` and the fix) if training would refuse
    its config."""
    t = cfg.training
    if not t.enabled or t.trainer is not None or not t.overrides:
        return  # no overrides: the method's defaults were checked when it registered
    from trainer.config import config_for
    from trainer.methods import get_training_method

    base = t.overrides.get("base_model")
    if isinstance(base, str) and base not in ("default", "embedded") and not (Path(base).expanduser() / "config.json").is_file():
        raise ConfigError(f"training.overrides.base_model = {base!r} is not a local Hugging Face model directory "
                          "(no config.json); use 'default' or a directory that exists")
    wrong = _wrong_types(get_training_method(t.method).config_class, t.overrides)
    if wrong:
        raise ConfigError(f"training.overrides: {'; '.join(wrong)} (fix the value in [training.overrides])")
    with tempfile.TemporaryDirectory(prefix="selfevolve-preflight-") as tmp:
        try:
            config_for(t.method, output_dir=tmp, max_steps=t.steps, env=t.env, **t.overrides)
        except (ValueError, TypeError) as e:
            detail = " ".join(str(e).split())
            raise ConfigError(f"training.overrides {t.overrides} rejected by the {t.method!r} config: {detail} "
                              "(fix or remove the key in [training.overrides])") from None
