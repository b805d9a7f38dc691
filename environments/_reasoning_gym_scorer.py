"""reasoning-gym's scorers, run inside the sandbox worker (a handler file for environments.sandbox.Worker).

Loaded by path in the worker process, never imported by selfevolve itself: it must not import our
package. ``preload`` imports reasoning-gym once before the jail closes; ``prepare`` builds (and caches)
a dataset from its spec in the worker; ``handle`` runs in a fresh forked child per answer and calls the
dataset's own ``score_answer`` on the entry the task recorded (its answer and metadata, typed-JSON
encoded by the sandbox codec, ``_codec``, which the worker process has already imported). Regenerating
the entry from its index is only the fallback for metadata the codec cannot carry: five datasets
(isomorphic_strings, knight_swap, polynomial_multiplication, ransom_note, word_ladder) generate
different items under a different ``PYTHONHASHSEED``, i.e. in another process.

The scorer holds the reference answer, so a forged score is only impossible if model text is never
*executed* in here; the jail alone only protects the machine. Hence, on top of it:

- the scorers that ``eval`` the answer to read a Python literal (a list of characters, a matrix, a
  board) get an ``eval`` that reads literals and nothing else (:func:`literal_only_eval`);
- sympy's ``parse_expr`` (which ``eval``s; reached by the polynomial, integration, puzzle24 and
  countdown scorers, and by ``sympify`` of a string) refuses, while an answer is being scored, any text
  that is not plain math (:func:`math_only`): no strings, no names starting with ``_``, no attribute
  access, no ``lambda``, no builtin but a few numeric ones. Generating the entry is not screened.

The remaining ``eval``/``exec`` calls in reasoning-gym run on its own generated data, never on answers
(audit in docs/reliability.md).

One scorer is replaced: game_of_life_halting's ``bool(answer) == bool(entry["answer"])`` gives any
non-empty text full marks when the reference is a non-empty string (found by sending payloads through
every dataset); here the answer must equal the reference, ignoring case and surrounding space.
"""

from __future__ import annotations

import ast
import builtins
import io
import json
import sys
import tokenize

SIZE = 100_000  # as in the parent: an entry regenerated from its index needs the same dataset
MAX_LITERAL = 100_000
_LITERAL_EVAL_MODULES = (
    "reasoning_gym.algorithmic.spiral_matrix",
    "reasoning_gym.algorithmic.string_insertion",
    "reasoning_gym.algorithmic.binary_matrix",
    "reasoning_gym.games.n_queens",
)
_NUMERIC_BUILTINS = {"abs", "min", "max", "pow", "round", "int", "float", "complex", "sum"}
_datasets: dict[str, object] = {}
_scoring = False  # True while score_answer runs: parse_expr then screens its input


def literal_only_eval(source, *_args, **_kwargs):
    """What those scorers wanted from ``eval``: a Python literal, or ValueError."""
    if not isinstance(source, str) or len(source) > MAX_LITERAL:
        raise ValueError("not a short Python literal")
    return ast.literal_eval(source)


def math_only(text: str) -> None:
    """Raise ValueError unless ``text`` tokenizes as plain math (numbers, operators, names that are not
    builtins and do not start with ``_``), without strings, attribute access or ``lambda``.

    >>> math_only("3*x**2 - sin(y)/2 + E")
    >>> math_only("__import__('os').system('id')")
    Traceback (most recent call last):
        ...
    ValueError: not a math expression: '__import__'
    """
    if not isinstance(text, str) or len(text) > MAX_LITERAL:
        raise ValueError("not a short math expression")
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError) as e:
        raise ValueError(f"not a math expression: {e}") from None
    for tok in tokens:
        bad_name = tok.type == tokenize.NAME and (
            tok.string.startswith("_") or tok.string == "lambda"
            or (hasattr(builtins, tok.string) and tok.string not in _NUMERIC_BUILTINS)
        )
        bad_op = tok.type == tokenize.OP and tok.string in (".", ";", ":=", "@")
        if bad_name or bad_op or tok.type == tokenize.STRING:
            raise ValueError(f"not a math expression: {tok.string!r}")


def _screened(parse):
    def parse_expr(s, *args, **kwargs):
        if _scoring:
            math_only(s)
        return parse(s, *args, **kwargs)

    return parse_expr


def preload() -> None:
    import reasoning_gym  # noqa: F401  - imports every dataset module
    import sympy
    import sympy.parsing.sympy_parser as sympy_parser

    original = sympy_parser.parse_expr
    screened = _screened(original)
    for module in [sympy, sympy_parser, *(m for n, m in list(sys.modules.items()) if n.startswith("reasoning_gym"))]:
        if getattr(module, "parse_expr", None) is original:
            module.parse_expr = screened
    for name in _LITERAL_EVAL_MODULES:
        __import__(name)
        sys.modules[name].eval = literal_only_eval  # module globals shadow the builtin


def prepare(payload: dict):
    """The dataset (only its scorer is used when the entry came along, so then a one-item one is enough)."""
    import reasoning_gym

    size = 1 if "entry" in payload else SIZE
    key = json.dumps([payload["task"], payload["seed"], payload["options"], size], sort_keys=True)
    if key not in _datasets:
        _datasets[key] = reasoning_gym.create_dataset(payload["task"], seed=payload["seed"], size=size, **payload["options"])
    return _datasets[key]


def _same_text(answer, entry) -> float:
    return float(isinstance(answer, str) and answer.strip().lower() == str(entry["answer"]).strip().lower())


_SCORERS = {"game_of_life_halting": _same_text}  # datasets whose own scorer accepts anything


def handle(payload: dict, dataset) -> float:
    global _scoring
    import _codec  # the sandbox's own codec module, loaded by the worker before this file

    if "entry" in payload:
        entry = {"question": payload["question"], **_codec.decode(payload["entry"])}
    else:
        entry = dataset[payload["index"]]
    _scoring = True
    scorer = _SCORERS.get(payload["task"], dataset.score_answer)
    return float(scorer(payload["answer"], entry))
