"""Fuzz the daemon config: ~200 generated TOML files, valid and nonsense, through the daemon's start checks.

    python -m tests.config_fuzz [--n 200] [--seed 0]

Each case is a valid base config with one mutation that is either valid (a value in range, another env,
a real plug-in) or nonsense (a typo'd key, a value out of range or of the wrong type, an env or plug-in that
does not exist, a ``training.env`` that is not configured, a training override the method refuses). A case
goes through exactly what ``selfevolve daemon`` runs before its first cycle: :func:`load_config` then
:func:`check_training`. Counted: nonsense accepted (target 0), valid refused (target 0), tracebacks (any
exception other than ConfigError; target 0), and refusals whose message does not name the mutated key.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from agent.daemon.config import ConfigError, load_config
from agent.daemon.preflight import check_training

BASE: dict[str, Any] = {
    "model": "python:tests.daemon_scripted:policy",
    "embedder": "python:tests.daemon_scripted:HashEmbedder",
    "environments": [{"spec": "arithmetic"}],
}

# (key path, value, valid?) — the key path is also what a refusal must name.
VALID: list[tuple[str, Any]] = [
    ("episodes_per_cycle", 4), ("concurrency", 2), ("chunk", 0), ("seed", 7), ("sleep_s", 0.5),
    ("feedback", "majority:k=3"), ("model", "default"), ("tensorboard", False),
    ("environments", [{"spec": "arithmetic:digits=2"}, {"spec": "countdown", "weight": 2.0}]),
    ("curriculum.window", 50), ("curriculum.floor", 0.1), ("curriculum.enabled", False),
    ("training.steps", 2), ("training.min_new_failures", 1), ("training.method", "sft"), ("training.env", "arithmetic"),
    ("training.overrides", {"lora_r": 8}), ("training.overrides", {"learning_rate": 2e-4, "lora_alpha": 16}),
    ("training.trainer", "python:tests.daemon_scripted:fake_train"), ("training.enabled", False),
    ("gate.eval_size", 8), ("gate.margin", 0.05), ("gate.primary", "first"), ("monitors.tasks", 0),
    ("monitors.temperature", 1.2), ("tripwires.window", 4), ("budgets.cycles", 3), ("budgets.disk_mb", 500.0),
    ("episode.max_attempts", 3),
]
NONSENSE: list[tuple[str, Any]] = [
    ("episodes_per_cyle", 4), ("episodes_per_cycle", 0), ("episodes_per_cycle", "many"), ("concurrency", -1),
    ("chunk", -2), ("sleep_s", -1.0), ("feedback", "oracle"), ("model", "gpt5"), ("model", "hf:/no/such/dir"),
    ("model", "python:no_such_pkg_fuzz:policy"), ("model", "python:tests.daemon_scripted:nope"),
    ("embedder", "minilm"), ("embedder", "python:no_such_pkg_fuzz:E"),
    ("environments", []), ("environments", [{"spec": "nosuchenv"}]), ("environments", [{"spec": "arithmetic:digits=0"}]),
    ("environments", [{"spec": "arithmetic:digts=2"}]), ("environments", [{"spec": "arithmetic", "weight": 0}]),
    ("environments", [{"spec": "arithmetic"}, {"spec": "arithmetic"}]), ("environments", [{"spec": "arithmetic", "w": 1}]),
    ("curriculum.window", 0), ("curriculum.floor", 0.9), ("curriculum.explore_weight", 2.0), ("curriculum.windw", 3),
    ("training.steps", 0), ("training.method", "ppo"), ("training.env", "countdown"), ("training.env", "arithmtic"),
    ("training.overrides", {"lora_r": 0}), ("training.overrides", {"lora_rank": 8}),
    ("training.overrides", {"learning_rate": "fast"}), ("training.overrides", {"use_lora": "yes"}),
    ("training.overrides", {"base_model": "/no/such/model"}), ("training.overrides", {"lora_target_modules": []}),
    ("training.trainer", "python:no_such_pkg_fuzz:train"), ("training.trainer", "fake_train"),
    ("gate.eval_size", 0), ("gate.margin", 1.5), ("gate.primary", "best"), ("gate.max_attempts", 99),
    ("monitors.k", 0), ("monitors.temperature", 0), ("tripwires.window", 1), ("tripwires.kl_factor", 0.5),
    ("budgets.cycles", 0), ("budgets.disk_mb", -5), ("budgets.wall_time_s", 0), ("episode.max_attempts", 0),
    ("gates.margin", 0.1),
]


def _value(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + "}"
    return json.dumps(v)  # TOML and JSON agree on strings, numbers, booleans and arrays of them


def to_toml(data: dict[str, Any]) -> str:
    """The few TOML forms a daemon config needs: top-level scalars, tables, ``[[environments]]``."""
    lines = [f"{k} = {_value(v)}" for k, v in data.items() if k != "environments" and not isinstance(v, dict)]
    for entry in data.get("environments", []):
        lines += ["[[environments]]", *(f"{k} = {_value(v)}" for k, v in entry.items())]
    for k, v in data.items():
        if isinstance(v, dict):
            lines += [f"[{k}]", *(f"{kk} = {_value(vv)}" for kk, vv in v.items())]
    return "\n".join(lines) + "\n"


def mutate(key: str, value: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(BASE))
    section, _, leaf = key.rpartition(".")
    (data.setdefault(section, {}) if section else data)[leaf] = value
    return data


def run_case(key: str, value: Any, valid: bool, tmp: Path, i: int) -> str:
    path = tmp / f"case{i}.toml"
    path.write_text(to_toml(mutate(key, value)), encoding="utf-8")
    try:
        check_training(load_config(path))
    except ConfigError as e:
        if valid:
            return "valid refused"
        msg = str(e)
        if len(msg.splitlines()) > 2:  # "invalid daemon config FILE:" then one line for the one mistake
            return "refused, not one line"
        named = any(part in msg for part in (key, *key.split(".")))
        return "refused, names the key" if named else "refused, key not named"
    except Exception:  # noqa: BLE001 - counting tracebacks is the point
        return "traceback"
    return "valid accepted" if valid else "nonsense accepted"


def main(argv: list[str] | None = None) -> dict[str, int]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    pool = [(k, v, True) for k, v in VALID] + [(k, v, False) for k, v in NONSENSE]
    cases = pool + [rng.choice(pool) for _ in range(max(0, args.n - len(pool)))]  # each at least once
    counts: Counter[str] = Counter()
    bad: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (key, value, valid) in enumerate(cases):
            outcome = run_case(key, value, valid, Path(tmp), i)
            counts[outcome] += 1
            if outcome in ("valid refused", "nonsense accepted", "traceback", "refused, key not named",
                           "refused, not one line"):
                bad.append(f"{outcome}: {key} = {value!r}")
    print("| cases | valid accepted | valid refused | nonsense refused, one line naming the key | key not named "
          "| not one line | nonsense accepted | tracebacks |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {len(cases)} | {counts['valid accepted']} | {counts['valid refused']} | {counts['refused, names the key']} | "
          f"{counts['refused, key not named']} | {counts['refused, not one line']} | {counts['nonsense accepted']} | "
          f"{counts['traceback']} |")
    for line in dict.fromkeys(bad):
        print("  " + line)
    return dict(counts)


if __name__ == "__main__":
    main()
