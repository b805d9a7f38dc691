"""Docstring examples are tests too (they document the parsers and statistics)."""

import doctest
import importlib

import pytest

MODULES = [
    "agent.prompts", "agent.feedback.sources", "trainer.gate", "environments.chat", "bench.experiments.common", "bench.experiments.learning.report",
    "environments.arithmetic", "environments.countdown", "environments.open_ended", "memory.records",
    "bench.experiments.reflection.stats", "bench.experiments.reflection.planted", "trainer.dynamic_sampling",
    "agent.scale.cluster", "trainer.launch",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
