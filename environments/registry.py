"""Environment registry: ``@register_environment("name")`` plus the ``selfevolve.environments`` entry points.

A third-party package adds an environment with no change to this repository by declaring, in its
own ``pyproject.toml``::

    [project.entry-points."selfevolve.environments"]
    my_env = "my_package.envs:MyEnvironment"

Environments are named by a *spec* string shared by the CLI and config files::

    arithmetic                      # defaults
    arithmetic:digits=2,terms=3     # options (validated by the environment's config class)
    reasoning_gym:leg_counting      # a bare item is the environment's positional option (here: task)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, TypeVar

from .base import Environment

ENTRY_POINT_GROUP = "selfevolve.environments"

_REGISTRY: dict[str, type[Environment]] = {}
_BROKEN: dict[str, str] = {}  # entry-point name -> why it did not load (said when someone asks for it)
_entry_points_loaded = False
log = logging.getLogger(__name__)

E = TypeVar("E", bound=type[Environment])


def register_environment(name: str) -> Callable[[E], E]:
    """Class decorator registering an :class:`Environment` subclass under ``name``.

    Refuses a name already taken (by another class) and anything that is not an Environment subclass.
    """
    if not name or ":" in name or "," in name:
        raise ValueError(f"environment names must be non-empty without ':' or ',', got {name!r}")

    def decorator(cls: E) -> E:
        _register(name, cls)
        return cls

    return decorator


def _register(name: str, cls: Any) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Environment)):
        raise TypeError(f"{cls!r} registered as {name!r} is not a subclass of environments.Environment")
    existing = _REGISTRY.get(name)
    if existing is not None and existing is not cls:
        raise ValueError(
            f"environment {name!r} is already registered by {existing.__module__}.{existing.__qualname__}; "
            "choose another name"
        )
    cls.name = name
    _REGISTRY[name] = cls


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _REGISTRY:
            continue
        try:
            obj = ep.load()
            if ep.name not in _REGISTRY:  # the module may have registered itself with the decorator
                _register(ep.name, obj)
        except Exception as e:  # noqa: BLE001 - a broken plug-in must not hide the built-ins: skip it, say which
            package = ep.dist.name if ep.dist is not None else "an unknown package"
            _BROKEN[ep.name] = (f"environment {ep.name!r} from package {package!r} ({ep.value}) failed to load: "
                                f"{type(e).__name__}: {e}; reinstall or uninstall {package}")
            log.warning("skipping %s", _BROKEN[ep.name])


def reload_entry_points() -> None:
    """Look again for installed plug-ins (e.g. after installing one in a running process)."""
    global _entry_points_loaded
    _entry_points_loaded = False
    _BROKEN.clear()
    _load_entry_points()


def list_environments() -> dict[str, type[Environment]]:
    _load_entry_points()
    return dict(sorted(_REGISTRY.items()))


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``name:opt=1,flag=true,bare`` into ``("name", {...})``; a bare item goes to key ``""``."""
    name, _, rest = spec.strip().partition(":")
    options: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if eq:
            options[key.strip()] = _parse_value(value.strip())
        elif "" in options:
            raise ValueError(f"environment spec {spec!r} has more than one bare option")
        else:
            options[""] = item
    return name, options


def get_environment(spec: str, **overrides: Any) -> Environment:
    """Instantiate an environment from a spec string (see module docstring)."""
    name, options = parse_spec(spec)
    envs = list_environments()
    if name not in envs and name in _BROKEN:
        raise KeyError(_BROKEN[name])
    if name not in envs:
        known = ", ".join(envs) or "(none)"
        raise KeyError(f"unknown environment {name!r}. Known: {known}. See `selfevolve envs list`.")
    cls = envs[name]
    if "" in options:
        positional = getattr(cls, "positional_option", None)
        if positional is None:
            raise ValueError(f"environment {name!r} takes only key=value options, got {options['']!r}")
        options[positional] = options.pop("")
    options.update(overrides)
    return cls(**options)
