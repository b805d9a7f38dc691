"""Micro-benchmarks: one component against its baseline (results in docs/benchmarks.md)."""
