"""The daemon's configuration: one TOML file validated into pydantic models (unknown keys are errors).

    selfevolve daemon --workspace ws --config docker/daemon.toml

Every section forbids unknown keys, so a typo (``episodes_per_cyle``) fails at start with the TOML path
of the offending key (``training.min_new_failures: Input should be greater than or equal to 1``) rather
than being silently ignored. Environment and feedback specs are checked by building them, the model
spec by parsing it, so the daemon never discovers a bad config after an hour of collecting.

Plug-ins (documented in docs/daemon.md): ``model``, ``training.trainer`` and ``embedder`` accept
``python:<module>:<factory>``, resolved by :func:`load_plugin`. Tests use them to run the real loop
with a scripted policy, a fake trainer and a hashing embedder in seconds.
"""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.graph import EpisodeConfig

PLUGIN_PREFIX = "python:"


class ConfigError(ValueError):
    """A daemon config that cannot be used; the message names the key and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EnvEntry(_Section):
    spec: str = Field(description="Environment spec, e.g. 'arithmetic:digits=2'.")
    weight: float = Field(default=1.0, gt=0, description="Relative share of collection (times the curriculum's).")

    @field_validator("spec")
    @classmethod
    def _buildable(cls, v: str) -> str:
        from environments import get_environment

        try:
            get_environment(v)
        except (KeyError, ValueError) as e:
            raise ValueError(str(e).strip("'\"")) from None
        return v


class CurriculumConfig(_Section):
    enabled: bool = Field(default=True, description="HS-STaR boundary sampling; false = uniform over envs.")
    window: int = Field(default=200, ge=1, description="Recent episodes per environment used to estimate success rates.")
    min_samples: int = Field(default=4, ge=1, description="Below this many episodes a level counts as unexplored.")
    explore_weight: float = Field(default=0.25, gt=0, le=1, description="Weight of an unexplored level (0.25 = max p(1-p)).")
    floor: float = Field(default=0.02, ge=0, le=0.25, description="Minimum weight of an explored level (always/never solved).")
    oversample: int = Field(default=4, ge=1, le=20, description="Candidate tasks drawn per slot before weighting by level.")


class TrainingConfig(_Section):
    enabled: bool = True
    method: str = Field(default="grpo-reflection", description="A registered training method (trainer.methods).")
    steps: int = Field(default=4, ge=1, description="Optimizer steps per training.")
    min_new_failures: int = Field(default=8, ge=1, description="Failed first attempts since the last training needed to train.")
    env: str | None = Field(default=None, description="Train on one env spec's episodes only (default: all).")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Trainer config overrides (trainer/config.py fields).")
    trainer: str | None = Field(default=None, description="python:<module>:<factory> replacing trainer.train.train (tests).")
    launcher: Literal["inprocess", "accelerate"] = Field(
        default="inprocess", description="inprocess: train in the daemon's process; accelerate: `accelerate launch` (trainer/launch.py).")
    num_processes: int | None = Field(default=None, ge=1, description="Processes for the accelerate launcher "
                                      "(default: the config's, else one per GPU, else 2).")
    accelerate_config: str | None = Field(default=None, description="cpu_2proc | ddp | zero2 | zero3 "
                                          "(trainer/accelerate_configs/) or a path; default cpu_2proc without a GPU, ddp with one.")

    @field_validator("method")
    @classmethod
    def _registered(cls, v: str) -> str:
        from trainer.methods import method_names  # names only: imports no TRL

        if v not in method_names():
            raise ValueError(f"unknown training method {v!r}; choose one of {', '.join(method_names())}")
        return v

    @model_validator(mode="after")
    def _launchable(self) -> TrainingConfig:
        self.make_launcher()  # ValueError naming the key and the fix (a missing config, DeepSpeed absent, ...)
        return self

    def make_launcher(self):
        """The :class:`trainer.launch.Launcher` these keys describe (checked)."""
        # trainer.launch imports nothing heavy; make_launcher imports torch and accelerate only for "accelerate".
        from trainer.launch import make_launcher

        return make_launcher(self.launcher, self.num_processes, self.accelerate_config)


class GateConfig(_Section):
    eval_size: int = Field(default=32, ge=1, description="Held-out tasks (split across envs) both versions are scored on.")
    eval_seed: int = Field(default=0, description="Seed of the held-out task list: the same list every cycle.")
    margin: float = Field(default=0.0, ge=0, lt=1, description="Required accuracy gain (0 = strictly better).")
    primary: Literal["first", "final"] = "final"
    max_attempts: int = Field(default=2, ge=1, le=10)
    max_tokens: int = Field(default=128, ge=1)


class MonitorConfig(_Section):
    tasks: int = Field(default=4, ge=0, description="Tasks probed per cycle for pass@k (0 = off).")
    k: int = Field(default=4, ge=1, le=64, description="Samples per probed task.")
    target_distinct: int = Field(default=2, ge=1, description="n* of B-STaR's balance score.")
    temperature: float = Field(default=0.9, gt=0, le=2)


class TripwireConfig(_Section):
    enabled: bool = True
    window: int = Field(default=3, ge=2, description="Training cycles compared for reward-up/accuracy-down.")
    min_reward_rise: float = Field(default=0.05, ge=0)
    min_accuracy_drop: float = Field(default=0.05, ge=0)
    kl_factor: float = Field(default=5.0, gt=1, description="KL jump: last KL above factor x median of earlier ones...")
    kl_min: float = Field(default=0.05, ge=0, description="...and above this absolute value.")


class BudgetConfig(_Section):
    wall_time_s: float | None = Field(default=None, gt=0, description="Total daemon running time, over restarts.")
    episodes: int | None = Field(default=None, ge=1, description="Episodes collected by the daemon.")
    training_steps: int | None = Field(default=None, ge=1)
    cycles: int | None = Field(default=None, ge=1)
    disk_mb: float | None = Field(default=None, gt=0, description="Workspace size above which training is refused.")


class DaemonConfig(_Section):
    model: str = Field(default="default", description="Model spec, or python:<module>:<factory> (a Policy factory).")
    feedback: str = Field(default="verifier", description="verifier | majority[:k=..] | rubric | critique")
    embedder: str = Field(default="default", description="'default' (MiniLM) or python:<module>:<factory>.")
    environments: list[EnvEntry] = Field(min_length=1)
    episodes_per_cycle: int = Field(default=16, ge=1)
    concurrency: int = Field(default=8, ge=1)
    chunk: int = Field(default=0, ge=0, description="Episodes per stop check while collecting (0 = concurrency).")
    seed: int = 0
    sleep_s: float = Field(default=0.0, ge=0, description="Pause between cycles.")
    tensorboard: bool = True
    episode: EpisodeConfig = Field(default_factory=EpisodeConfig)
    curriculum: CurriculumConfig = Field(default_factory=CurriculumConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    monitors: MonitorConfig = Field(default_factory=MonitorConfig)
    tripwires: TripwireConfig = Field(default_factory=TripwireConfig)
    budgets: BudgetConfig = Field(default_factory=BudgetConfig)
    ray: str | None = Field(default=None, description="Collect on Ray workers: local (a cluster in the daemon's process) | "
                            "auto | HOST:PORT | ray://HOST:10001. Needs pip install 'selfevolve[scale]'.")
    ray_workers: int | None = Field(default=None, ge=1, description="Ray workers (default: 2 local, else the cluster's CPUs).")
    ray_retries: int = Field(default=3, ge=0, le=100, description="Resubmissions of a task whose Ray worker died.")

    @field_validator("ray")
    @classmethod
    def _ray_address(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from agent.scale.cluster import INSTALL_HINT, parse_address, ray_installed

        v = parse_address(v)
        if not ray_installed():
            raise ValueError(f"ray = {v!r} needs Ray, which is not installed: {INSTALL_HINT} (or remove the ray key)")
        return v

    @field_validator("model")
    @classmethod
    def _model_spec(cls, v: str) -> str:
        if v.startswith(PLUGIN_PREFIX):
            _check_plugin(v)
            return v
        from agent.policy.base import parse_model_spec

        spec = parse_model_spec(v)
        if v.startswith("hf:"):
            _check_model_dir(spec.path)
        return v

    @field_validator("embedder")
    @classmethod
    def _embedder(cls, v: str) -> str:
        if v != "default":
            _check_plugin(v)
        return v

    @model_validator(mode="after")
    def _cross(self) -> DaemonConfig:
        from agent.feedback import make_feedback_source
        from environments import get_environment

        env = get_environment(self.environments[0].spec)
        make_feedback_source(self.feedback, env)  # raises ValueError naming the fix
        specs = [e.spec for e in self.environments]
        if len(set(specs)) != len(specs):
            raise ValueError(f"environments lists a spec twice: {specs}")
        if self.training.trainer is not None:
            try:
                _check_plugin(self.training.trainer)
            except ValueError as e:
                raise ValueError(f"training.trainer: {e}") from None
        if self.ray_workers is not None and self.ray is None:
            raise ValueError(f"ray_workers = {self.ray_workers} is set but ray is not: add ray = \"local\" (or a cluster "
                             "address) or remove ray_workers")
        if self.training.env is not None:  # canonical, as episodes record it (else training counts none)
            self.training.env = _check_training_env(self.training.env, specs)
        return self

    @property
    def collect_chunk(self) -> int:
        return self.chunk or self.concurrency

    @property
    def ray_options(self) -> Any:
        """The :class:`agent.scale.session.RayOptions` of ``ray``/``ray_workers``/``ray_retries`` (None: in-process)."""
        if self.ray is None:
            return None
        from agent.scale.session import RayOptions

        return RayOptions(address=self.ray, workers=self.ray_workers, max_retries=self.ray_retries)


def _split_plugin(spec: str) -> tuple[str, str]:
    body = spec.removeprefix(PLUGIN_PREFIX)
    module, sep, attr = body.rpartition(":")
    if not spec.startswith(PLUGIN_PREFIX) or not sep or not module or not attr:
        raise ValueError(f"bad plug-in spec {spec!r}: expected python:<module>:<factory>, e.g. python:tests.daemon_scripted:policy")
    return module, attr


def _check_plugin(spec: str) -> None:
    """Import a plug-in now, so a misspelt or uninstalled module fails at start, not in the first cycle."""
    try:
        load_plugin(spec)
    except ImportError as e:
        raise ValueError(f"plug-in {spec!r} cannot be imported ({e}); check the module name or install its package") from None
    except ConfigError as e:
        raise ValueError(str(e)) from None


def _check_model_dir(path: str) -> None:
    """``hf:<path>`` loads from local disk only (HF_HUB_OFFLINE=1): the directory must hold a config.json."""
    p = Path(path).expanduser()
    if not (p / "config.json").is_file():
        what = "does not exist" if not p.exists() else "has no config.json (not a Hugging Face model directory)"
        raise ValueError(f"model directory {p} {what}; use 'default' for the embedded model or hf:/path/to/model_dir")


def _check_training_env(env: str, specs: list[str]) -> str:
    """``training.env`` must be one of ``environments`` (by canonical spec), or training never finds episodes."""
    from environments import get_environment

    try:
        canonical = get_environment(env).spec
    except (KeyError, ValueError) as e:
        raise ValueError(f"training.env = {env!r} is not a valid env spec ({str(e).strip(chr(39))}); "
                         f"use one of the configured environments: {', '.join(specs)}") from None
    configured = {get_environment(s).spec for s in specs}
    if canonical not in configured:
        raise ValueError(f"training.env = {env!r} is not one of the configured environments ({', '.join(specs)}); "
                         "add it to [[environments]] or remove training.env to train on all of them")
    return canonical


def load_plugin(spec: str) -> Any:
    """The object named by ``python:<module>:<attr>`` (imported now; ImportError names the module)."""
    module, attr = _split_plugin(spec)
    mod = importlib.import_module(module)
    try:
        return getattr(mod, attr)
    except AttributeError:
        raise ConfigError(f"plug-in {spec!r}: module {module!r} has no attribute {attr!r}") from None


_CROSS_KEYS = ("training.env", "training.trainer", "environments", "feedback", "ray_workers")


def format_validation_error(e: ValidationError, source: str) -> str:
    lines = [f"invalid daemon config {source}:"]
    for err in e.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see docs/daemon.md for the schema)"
        if path == "(top level)" and msg.startswith(_CROSS_KEYS):
            lines.append(f"  {msg}")  # a cross-field check names its own key
        else:
            lines.append(f"  {path}: {msg}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], source: str = "<dict>") -> DaemonConfig:
    try:
        return DaemonConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None


def load_config(path: str | Path) -> DaemonConfig:
    """Read and validate a TOML config; ConfigError (naming the key) if it is wrong."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"daemon config {path} does not exist (see docker/daemon.toml for an example)") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"daemon config {path} is not valid TOML: {e}") from None
    return parse_config(data, str(path))
