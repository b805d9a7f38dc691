"""Micro-benchmarks: the cost of one component in isolation (``python -m bench.micro.<name>``)."""
