"""Feedback-source registry: ``@register_feedback_source("name")`` plus the ``selfevolve.feedback_sources``
entry points, like the environments' registry.

A source is a class with ``options_class`` (a pydantic model of its options; unknown keys are errors), a
constructor taking one instance of it, and ``async score(task, output, deps) -> (feedback, ground truth or
None)`` (:class:`agent.graph.FeedbackSource`). It may define ``check_environment(environment)`` (a classmethod) to
refuse an environment it cannot grade before the first episode. A third-party package adds one with no
change here::

    [project.entry-points."selfevolve.feedback_sources"]
    judge = "my_package.feedback:JudgeFeedback"

Sources are named by a spec string like environments (``majority:k=8,threshold=0.5``); ``verifier`` is
not a registered source but the environment's own verifier (``None`` in ``GraphDeps.feedback``).

    selfevolve run --env arithmetic --feedback majority:k=8
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from environments import Environment, parse_spec
from environments.base import validation_summary

if TYPE_CHECKING:
    from agent.graph import FeedbackSource

ENTRY_POINT_GROUP = "selfevolve.feedback_sources"
VERIFIER = "verifier"

_REGISTRY: dict[str, type] = {}
_entry_points_loaded = False

S = TypeVar("S", bound=type)


class NoOptions(BaseModel):
    """The options of a source that takes none."""

    model_config = ConfigDict(extra="forbid")


def register_feedback_source(name: str) -> Callable[[S], S]:
    """Class decorator registering a feedback source under ``name`` (refuses duplicates and non-sources)."""
    if not name or ":" in name or "," in name or name == VERIFIER:
        raise ValueError(f"feedback source names must be non-empty, without ':' or ',', and not {VERIFIER!r}; got {name!r}")

    def decorator(cls: S) -> S:
        _register(name, cls)
        return cls

    return decorator


def _register(name: str, cls: Any) -> None:
    options = getattr(cls, "options_class", NoOptions)
    if not (isinstance(cls, type) and callable(getattr(cls, "score", None))):
        raise TypeError(f"{cls!r} registered as feedback source {name!r} has no score(task, output, deps) method")
    if not (isinstance(options, type) and issubclass(options, BaseModel)):
        raise TypeError(f"{cls.__qualname__}.options_class must be a pydantic BaseModel subclass, got {options!r}")
    existing = _REGISTRY.get(name)
    if existing is not None and existing is not cls:
        raise ValueError(f"feedback source {name!r} is already registered by {existing.__module__}.{existing.__qualname__}; "
                         "choose another name")
    cls.name = name
    cls.options_class = options
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
        except Exception as e:  # a broken plug-in must not hide the built-ins; say which one broke
            raise RuntimeError(f"entry point {ep.name!r} ({ep.value}) in {ENTRY_POINT_GROUP} failed to load: {e}") from e
        if ep.name not in _REGISTRY:  # the module may have registered itself with the decorator
            _register(ep.name, obj)


def reload_entry_points() -> None:
    """Look again for installed plug-ins (e.g. after installing one in a running process)."""
    global _entry_points_loaded
    _entry_points_loaded = False
    _load_entry_points()


def list_feedback_sources() -> dict[str, type]:
    """Registered sources by name, in registration order (built-ins first)."""
    _load_entry_points()
    return dict(_REGISTRY)


def make_feedback_source(spec: str, environment: Environment, **options: Any) -> FeedbackSource | None:
    """Build a feedback source from its spec (``"verifier"`` → None: the graph calls ``environment.verify``).

    ``spec`` may carry options like an environment spec (``"majority:k=8,threshold=0.5"``); keyword
    ``options`` override them. Raises ValueError naming the fix for an unknown name, a bad option, or an
    environment the source refuses (e.g. ``rubric`` on tasks without a rubric).
    """
    base, spec_options = parse_spec(spec)
    if "" in spec_options:
        raise ValueError(f"feedback spec {spec!r}: options must be key=value, e.g. majority:k=8")
    merged = {**spec_options, **options}
    if base == VERIFIER:
        if merged:
            raise ValueError(f"the verifier feedback source takes no options, got {sorted(merged)}")
        return None
    sources = list_feedback_sources()
    if base not in sources:
        known = ", ".join([VERIFIER, *sources])
        raise ValueError(f"unknown feedback source {base!r}; choose one of: {known} (see docs/self_reward.md)")
    cls = sources[base]
    try:
        opts = cls.options_class(**merged)
    except ValidationError as e:
        valid = ", ".join(cls.options_class.model_fields) or "(none)"
        raise ValueError(f"invalid options for feedback source {base!r}: {validation_summary(e)}. Valid options: {valid}") from e
    check = getattr(cls, "check_environment", None)
    if check is not None:
        check(environment)  # fail now, not in the first episode
    return cls(opts)
