"""Plain values across the sandbox boundary: a typed JSON encoding of builtin data, nothing else.

Both sides import this file (the child by path, before its jail closes; stdlib only). The child encodes
what untrusted code returned; the parent decodes it into *fresh builtin objects* and compares those, so an
object with a rigged ``__eq__``, an ``int`` subclass or anything that is not plain data never reaches a
comparison: :func:`encode` accepts exact builtin types only (``type(x) is int``, not ``isinstance``).

JSON carries None, bool, int, float (finite) and str as themselves and lists as lists; everything else is a
tagged object ``{"$": tag, "v": ...}`` (tuple, dict with any plain keys, set, frozenset, bytes, a float
that JSON cannot write). Plain JSON objects never appear untagged, so decoding is unambiguous.

>>> decode(encode({"a": (1, 2.5), 3: {frozenset({None})}}))
{'a': (1, 2.5), 3: {frozenset({None})}}
>>> encode(True), encode([1, "x"])
(True, [1, 'x'])
>>> class Sneaky(int):
...     def __eq__(self, other): return True
>>> encode(Sneaky(1))
Traceback (most recent call last):
    ...
TypeError: a value of type Sneaky is not plain data (None, bool, int, float, str, list, tuple, dict, set, bytes)
"""

from __future__ import annotations

import math
from typing import Any

MAX_DEPTH = 100
_PLAIN = "None, bool, int, float, str, list, tuple, dict, set, bytes"


def encode(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON-ready data; ``TypeError`` for anything that is not exactly a builtin plain type."""
    if depth > MAX_DEPTH:
        raise TypeError(f"the value is nested more than {MAX_DEPTH} levels deep")
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value
    if kind is int:
        if value.bit_length() > 10_000:
            raise TypeError("an integer with more than 10000 bits")
        return value
    if kind is float:
        return value if math.isfinite(value) else {"$": "float", "v": repr(value)}
    if kind is list:
        return [encode(v, depth + 1) for v in value]
    if kind is tuple:
        return {"$": "tuple", "v": [encode(v, depth + 1) for v in value]}
    if kind is dict:
        return {"$": "dict", "v": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if kind is set or kind is frozenset:
        items = [encode(v, depth + 1) for v in value]
        return {"$": kind.__name__, "v": items}
    if kind is bytes:
        return {"$": "bytes", "v": value.hex()}
    raise TypeError(f"a value of type {kind.__name__} is not plain data ({_PLAIN})")


def decode(data: Any, depth: int = 0) -> Any:
    """The inverse of :func:`encode`; ``ValueError`` on anything :func:`encode` cannot have written."""
    if depth > MAX_DEPTH + 1:
        raise ValueError("nested too deeply")
    kind = type(data)
    if data is None or kind in (bool, int, float, str):
        return data
    if kind is list:
        return [decode(v, depth + 1) for v in data]
    if kind is not dict or set(data) != {"$", "v"}:
        raise ValueError(f"not an encoded value: {str(data)[:80]}")
    tag, raw = data["$"], data["v"]
    if tag == "float" and raw in ("nan", "inf", "-inf"):
        return float(raw)
    if tag == "bytes" and type(raw) is str:
        return bytes.fromhex(raw)
    if type(raw) is not list:
        raise ValueError(f"bad encoded {tag!r}")
    items = [decode(v, depth + 1) for v in raw] if tag != "dict" else None
    try:
        if tag == "tuple":
            return tuple(items)
        if tag == "set":
            return set(items)
        if tag == "frozenset":
            return frozenset(items)
        if tag == "dict":
            return {decode(k, depth + 1): decode(v, depth + 1) for k, v in raw}
    except (TypeError, ValueError) as e:  # unhashable keys or malformed pairs
        raise ValueError(f"bad encoded {tag!r}: {e}") from None
    raise ValueError(f"unknown tag {tag!r}")


def same(got: Any, expected: Any, rel_tol: float = 1e-9, abs_tol: float = 1e-9) -> bool:
    """Equality of two *decoded* values: types must agree (``True`` is not ``1``, a tuple is not a list),
    floats within a tolerance (an int where a float is expected is accepted). Recursive.

    >>> same([1, 2.0000000001], [1, 2.0]), same(True, 1), same((1,), [1]), same(2, 2.0)
    (True, False, False, True)
    """
    if type(expected) is float and type(got) in (int, float):
        return math.isclose(got, expected, rel_tol=rel_tol, abs_tol=abs_tol) or (math.isnan(got) and math.isnan(expected))
    if type(got) is not type(expected):
        return False
    if type(expected) in (list, tuple):
        return len(got) == len(expected) and all(same(g, e, rel_tol, abs_tol) for g, e in zip(got, expected, strict=True))
    if type(expected) is dict:
        return got.keys() == expected.keys() and all(same(got[k], expected[k], rel_tol, abs_tol) for k in expected)
    return got == expected
