"""Task environments: plain-Python problem generators with verifiers.

    from environments import get_environment
    env = get_environment("arithmetic:digits=2")
    task = env.sample(1, split="train", seed=0)[0]
    env.verify(task, "<answer>17</answer>")  # -> Feedback(reward, success, message, answer)

See docs/environments.md for writing a new one.
"""

from .base import (
    BARE_FEEDBACK,
    SPLITS,
    EnvConfig,
    Environment,
    Feedback,
    Message,
    Split,
    Task,
    normalize_answer,
)
from .registry import (
    ENTRY_POINT_GROUP,
    get_environment,
    list_environments,
    parse_spec,
    register_environment,
    reload_entry_points,
)

# Built-ins register themselves on import.
from . import arithmetic, countdown, function_calling, open_ended, python_code, reasoning_gym_env  # noqa: E402,F401  isort: skip

__all__ = [
    "BARE_FEEDBACK",
    "ENTRY_POINT_GROUP",
    "SPLITS",
    "EnvConfig",
    "Environment",
    "Feedback",
    "Message",
    "Split",
    "Task",
    "get_environment",
    "list_environments",
    "normalize_answer",
    "parse_spec",
    "register_environment",
    "reload_entry_points",
]
