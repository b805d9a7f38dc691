"""Measurements, split by kind; none of it is imported by the packages it measures.

- :mod:`bench.micro` — micro-benchmarks: one speed ratio each, measured side by side in one run, each
  rewriting its own section of docs/benchmarks.md (``make bench`` runs them all).
- :mod:`bench.experiments` — experiments: does the agent improve itself? One package per experiment,
  each writing its own doc under docs/ from a results file.

``bench/_report.py`` stamps machine, command and commit on whatever they write.
"""
