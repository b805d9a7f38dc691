"""Experiments: measurements that answer a question about the method (each a package with its own report)."""
