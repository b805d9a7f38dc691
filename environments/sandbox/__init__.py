"""Run untrusted Python — model-written code, third-party scorers fed model text — in a jailed process.

    from environments.sandbox import SandboxLimits, call_function
    report = call_function("def double(x):\\n    return 2 * x", "double", [[1], [5]], SandboxLimits(wall_s=2))
    [o.value for o in report.outcomes]          # [2, 10]: plain values, compared by the caller
    python -m bench.micro.sandbox               # cost per verification (docs/benchmarks.md)

Two ways in: :func:`call_function` (one fresh process per check; the candidate's function is called on
inputs, the caller compares the returned plain values with expectations the sandbox never sees) and
:class:`Worker` (a persistent jailed process that imports slow third-party code once and forks one child
per request). Both run :mod:`._child` behind the layers of :mod:`._jail`; :func:`isolation` says which
layers this machine gives. docs/environments.md ("The sandbox") has the limits, layers and measured cost.
"""

from __future__ import annotations

import functools

from .functions import CallReport, CaseOutcome, call_function
from .limits import SandboxLimits
from .process import SandboxResult, run
from .worker import Worker


@functools.cache
def isolation() -> tuple[str, ...]:
    """The layers a sandboxed run gets on this machine (e.g. mounts, network, uid, rlimits, audit_hook)."""
    return tuple(run({"mode": "call", "source": "", "entry": "_", "cases": []}, SandboxLimits()).layers)


__all__ = ["CallReport", "CaseOutcome", "SandboxLimits", "SandboxResult", "Worker", "call_function", "isolation", "run"]
