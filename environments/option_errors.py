"""One-line messages for bad environment options: the env, the option, what it got and what it allows.

Pydantic's own message is a multi-line dump with a documentation URL; a user who typed
``arithmetic:digits=0`` needs ``environment 'arithmetic': option digits=0 is not allowed (digits: an int
from 1 to 6, default 1)``. Used by :class:`environments.base.Environment` when its config class refuses
the options.
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def allowed(field: FieldInfo) -> str:
    """What a field accepts, in words: its choices, or its type and bounds; plus its default."""
    ann = field.annotation
    if typing.get_origin(ann) is typing.Literal:
        kind = "one of " + ", ".join(repr(a) for a in typing.get_args(ann))
    else:
        kind = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
        bounds = [f"{_BOUNDS[k]} {getattr(m, k)}" for m in field.metadata for k in _BOUNDS if getattr(m, k, None) is not None]
        if bounds:
            kind += " " + " and ".join(bounds)
    if field.is_required():
        return f"{kind}, required"
    default = field.get_default(call_default_factory=True)
    return f"{kind}, default {default!r}"


def describe(env: str, config_class: type[BaseModel], options: dict[str, Any], e: ValidationError) -> str:
    """``environment 'x': <problem>; <problem>`` — one line for every option pydantic refused."""
    fields = config_class.model_fields
    problems = []
    for err in e.errors():
        key = str(err["loc"][0]) if err["loc"] else ""
        if err["type"] == "extra_forbidden" or key not in fields:
            problems.append(f"unknown option {key!r} (Valid options: {', '.join(fields)})" if key else err["msg"])
        elif err["type"] == "missing":
            problems.append(f"option {key} is required ({allowed(fields[key])})")
        else:
            problems.append(f"option {key}={options.get(key)!r} is not allowed: {err['msg'].removeprefix('Value error, ')} "
                            f"({key}: {allowed(fields[key])})")
    return f"environment {env!r}: " + "; ".join(problems)
