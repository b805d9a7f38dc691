"""Training methods: each one is ONE registration — config class, defaults, dataset builder, trainer builder.

    from trainer.config import SelfEvolveSFTConfig
    from trainer.methods import register_training_method

    @register_training_method("my-sft", config_class=SelfEvolveSFTConfig, dataset=my_rows,
                              defaults={"max_length": 512}, needs="successful episode")
    def build_trainer(model, tokenizer, dataset, config, callbacks=None):
        return SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer, ...)

Then ``selfevolve train --method my-sft``, ``training.method = "my-sft"`` in a daemon config, and
``python -m bench.experiments.learning --methods my-sft`` all use it; nothing else lists methods.

Design decisions
- :class:`TrainingMethod` is the record every consumer reads: :func:`trainer.config.config_for`
  (config class + defaults), :func:`trainer.train.train` (dataset builder, minimum rows, whether to
  continue the parent's adapter, trainer builder), the CLI and the daemon config (names).
- Built-ins are one module each (``trainer/grpo_reflection.py``, ``grpo.py``, ``sft.py``, ``dpo.py``),
  registering themselves on import. :data:`BUILTIN_MODULES` maps their names to those modules — the one
  list here, like the import line of ``environments/__init__.py`` — so names are known without importing
  TRL (a daemon config validates in milliseconds) and a method's module loads only when it is used.
- Plug-ins: the entry-point group ``selfevolve.training_methods``; the value is a module that registers
  itself with the decorator, or a :class:`TrainingMethod`. Their names are listed without loading them.
- Registration refuses a duplicate name, a config class without our fields, and defaults that are not
  fields of the config class, so a broken method fails where it is declared, not in the first training.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from datasets import Dataset

    from memory.records import Episode

ENTRY_POINT_GROUP = "selfevolve.training_methods"
BUILTIN_MODULES: dict[str, str] = {
    "grpo-reflection": "trainer.grpo_reflection",
    "grpo": "trainer.grpo",
    "sft": "trainer.sft",
    "dpo": "trainer.dpo",
}



class DatasetBuilder(Protocol):
    """Rows for the method from recorded episodes (of env spec ``env``, or all), given the method's config."""

    def __call__(self, episodes: Sequence[Episode], env: str | None, config: Any, /) -> Dataset: ...


class TrainerBuilder(Protocol):
    """A ready-to-``train()`` transformers/TRL trainer for the rows (``callbacks``: progress, stop)."""

    def __call__(self, model: Any, tokenizer: Any, dataset: Dataset, config: Any, callbacks: list | None = None) -> Any: ...


_REGISTRY: dict[str, TrainingMethod] = {}


@dataclass(frozen=True)
class TrainingMethod:
    """Everything :func:`trainer.train.train` needs to know about one method."""

    name: str
    build_trainer: TrainerBuilder
    config_class: type
    dataset: DatasetBuilder  # (episodes, env spec or None, config) -> rows
    defaults: Mapping[str, Any] = field(default_factory=dict)  # on top of trainer.config's CPU defaults
    gpu_defaults: Mapping[str, Any] = field(default_factory=dict)  # on top of GPU_OVERRIDES (config_for(gpu=True))
    min_rows: int = 1
    needs: str | Callable[[Any], str] = "usable episode"  # what one row needs, for "no <needs> in ..." errors
    continue_adapter: bool = True  # train on from the served version's adapter (False: a fresh one on the base)
    empty_hint: Callable[[Sequence[Episode], str | None, str], str | None] | None = None  # why rows are missing

    def describe_rows(self, config: Any) -> str:
        return self.needs(config) if callable(self.needs) else self.needs


def register_training_method(
    name: str,
    *,
    config_class: type,
    dataset: DatasetBuilder,
    defaults: Mapping[str, Any] | None = None,
    gpu_defaults: Mapping[str, Any] | None = None,
    min_rows: int = 1,
    needs: str | Callable[[Any], str] = "usable episode",
    continue_adapter: bool = True,
    empty_hint: Callable[[Sequence[Episode], str | None, str], str | None] | None = None,
) -> Callable[[TrainerBuilder], TrainerBuilder]:
    """Decorator on a method's ``build_trainer`` registering the method under ``name`` (see module docstring)."""

    def decorator(build_trainer: TrainerBuilder) -> TrainerBuilder:
        register(TrainingMethod(
            name=name, build_trainer=build_trainer, config_class=config_class, dataset=dataset,
            defaults=dict(defaults or {}), gpu_defaults=dict(gpu_defaults or {}), min_rows=min_rows, needs=needs,
            continue_adapter=continue_adapter, empty_hint=empty_hint,
        ))
        return build_trainer

    return decorator


def register(method: TrainingMethod) -> TrainingMethod:
    """Add ``method`` to the registry (what the decorator does; also the form an entry point may point at)."""
    name = method.name
    if not name or any(c in name for c in ":, /"):
        raise ValueError(f"training method names must be non-empty without ':', ',', ' ' or '/'; got {name!r}")
    fields = getattr(method.config_class, "__dataclass_fields__", {})
    if not {"base_model", "use_lora", "env"} <= set(fields):
        raise TypeError(f"training method {name!r}: config_class {method.config_class!r} must subclass a TRL config and "
                        "carry trainer.config's fields (subclass e.g. trainer.config.SelfEvolveSFTConfig)")
    unknown = sorted((set(method.defaults) | set(method.gpu_defaults)) - set(fields))
    if unknown:
        raise ValueError(f"training method {name!r}: defaults {unknown} are not fields of {method.config_class.__name__}")
    if method.min_rows < 1:
        raise ValueError(f"training method {name!r}: min_rows must be >= 1, got {method.min_rows}")
    existing = _REGISTRY.get(name)
    if existing is not None and existing.build_trainer is not method.build_trainer:
        where = f"{existing.build_trainer.__module__}.{existing.build_trainer.__qualname__}"
        raise ValueError(f"training method {name!r} is already registered by {where}; choose another name")
    _REGISTRY[name] = method
    return method


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def method_names() -> list[str]:
    """Every method that can be used: built-ins first, then registered and installed plug-ins (nothing is imported)."""
    return list(dict.fromkeys([*BUILTIN_MODULES, *_REGISTRY, *_entry_points()]))


def get_training_method(name: str) -> TrainingMethod:
    """The registered method ``name``, importing its module on first use; ValueError listing the known names."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in BUILTIN_MODULES:
        importlib.import_module(BUILTIN_MODULES[name])
        if name not in _REGISTRY:  # our bug: the module does not register what the table says it does
            raise RuntimeError(f"{BUILTIN_MODULES[name]} did not register the training method {name!r}")
        return _REGISTRY[name]
    ep = _entry_points().get(name)
    if ep is None:
        raise ValueError(f"unknown training method {name!r}; choose one of {', '.join(method_names())}")
    try:
        obj = ep.load()
    except Exception as e:  # a broken plug-in: say which one, not a bare ImportError
        raise RuntimeError(f"entry point {name!r} ({ep.value}) in {ENTRY_POINT_GROUP} failed to load: {e}") from e
    if name not in _REGISTRY:  # the module may have registered itself with the decorator
        if not isinstance(obj, TrainingMethod) or obj.name != name:
            raise TypeError(f"entry point {name!r} ({ep.value}) neither registers a training method {name!r} nor is one")
        register(obj)
    return _REGISTRY[name]
