"""The Library protocol is the contract consumers type against: the real library must match it exactly."""

from __future__ import annotations

import inspect

import pytest

from memory.library import ExperienceLibrary
from memory.protocol import Library, ModelVersions


def _members(proto: type) -> list[str]:
    return [n for n, v in vars(proto).items() if inspect.isfunction(v) and not n.startswith("_")]


@pytest.mark.parametrize("proto", [Library, ModelVersions])
def test_real_library_signatures_match_the_protocol(proto):
    names = [n for p in proto.__mro__ if p not in (object,) and p.__name__ != "Protocol" for n in _members(p)]
    assert {"record", "search", "serving_version"} & set(names)
    for name in names:
        want = inspect.signature(getattr(proto, name))
        got = inspect.signature(getattr(ExperienceLibrary, name))
        assert list(got.parameters) == list(want.parameters), f"{name}: {got} vs protocol {want}"
        for param in want.parameters.values():
            other = got.parameters[param.name]
            assert (other.kind, other.default) == (param.kind, param.default), f"{name}({param.name})"


def test_real_library_is_a_library(library):
    assert isinstance(library, Library) and isinstance(library, ModelVersions)
    assert not isinstance(object(), ModelVersions)
