"""reasoning-gym's scorers, run inside the sandbox worker (a handler file for environments.sandbox.Worker).

Loaded by path in the worker process, never imported by selfevolve itself: it must not import our
package. ``preload`` imports reasoning-gym once before the jail closes; ``prepare`` builds (and caches)
a dataset from its spec in the worker; ``handle`` runs in a fresh forked child per answer: it rebuilds the
entry and calls the dataset's own ``score_answer``.

Defense in depth on top of the jail: the scorers that ``eval`` the answer to read a Python literal (a
list of characters, a matrix, a board) get an ``eval`` that reads literals and nothing else, so model
text is never executed by them even inside the jail. Scorers that parse with sympy (which evaluates its
input) keep their behaviour and rely on the jail, the audit hook and the per-answer time limit.
"""

from __future__ import annotations

import ast
import json
import sys

SIZE = 100_000
MAX_LITERAL = 100_000
_LITERAL_EVAL_MODULES = (
    "reasoning_gym.algorithmic.spiral_matrix",
    "reasoning_gym.algorithmic.string_insertion",
    "reasoning_gym.algorithmic.binary_matrix",
    "reasoning_gym.games.n_queens",
)
_datasets: dict[str, object] = {}


def literal_only_eval(source, *_args, **_kwargs):
    """What those scorers wanted from ``eval``: a Python literal, or ValueError."""
    if not isinstance(source, str) or len(source) > MAX_LITERAL:
        raise ValueError("not a short Python literal")
    return ast.literal_eval(source)


def preload() -> None:
    import reasoning_gym  # noqa: F401  - imports every dataset module and sympy

    for name in _LITERAL_EVAL_MODULES:
        module = sys.modules.get(name)
        if module is None:
            __import__(name)
            module = sys.modules[name]
        module.eval = literal_only_eval  # module globals shadow the builtin


def prepare(payload: dict):
    import reasoning_gym

    key = json.dumps([payload["task"], payload["seed"], payload["options"]], sort_keys=True)
    if key not in _datasets:
        _datasets[key] = reasoning_gym.create_dataset(payload["task"], seed=payload["seed"], size=SIZE, **payload["options"])
    return _datasets[key]


def handle(payload: dict, dataset) -> float:
    entry = dataset[payload["index"]]
    return float(dataset.score_answer(payload["answer"], entry))
