"""Call a model-written function on given inputs in the sandbox; get back plain values to judge outside.

    from environments.sandbox import SandboxLimits, call_function
    report = call_function("def double(x):\\n    return 2 * x", "double", [[1], [5]], SandboxLimits())
    report.outcomes[1].value   # 10, a fresh int decoded in this process

Only the *inputs* enter the sandbox. The candidate's return values come back typed-JSON encoded
(:mod:`._codec`: exact builtin types only) and are decoded here into new builtin objects, so the caller
compares plain data it trusts: an object whose ``__eq__`` is always true cannot even be sent, printing
"all tests passed" is just stdout, and exiting early or patching the harness only leaves cases missing.
The first message per case counts (a forked copy of the harness cannot overwrite a verdict).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import _codec
from .limits import SandboxLimits
from .process import SandboxResult, run


@dataclass(frozen=True)
class CaseOutcome:
    """One call: its decoded return ``value``, or the exception's last line in ``error``."""

    value: Any = None
    error: str | None = None


@dataclass
class CallReport:
    """Per case an outcome, or ``None`` where the case never reported (timeout, crash, early exit)."""

    outcomes: list[CaseOutcome | None]
    load_error: str | None = None  # the source did not compile, raised on import, or lacks the function
    run: SandboxResult = field(default_factory=SandboxResult)

    def why_missing(self, index: int) -> str:
        """Why case ``index`` has no outcome, as a predicate ("did not finish within 3 s ...")."""
        if self.load_error:
            return f"did not run: the code failed before any test ran: {self.load_error}"
        if self.run.timed_out and not self.run.layers:
            return f"was not checked: the sandbox did not start within {self.run.killed_for.split('(')[-1].rstrip(')')}"
        if self.run.timed_out:
            return f"did not finish within {self.run.killed_for.split('(')[-1].rstrip(')')} (an infinite loop, or far too slow)"
        if self.run.crash:
            return self.run.crash
        return "did not run: the program exited before it (define the function and return; do not exit)"


def call_function(source: str, entry: str, cases: Sequence[Sequence[Any]], limits: SandboxLimits | None = None) -> CallReport:
    """Run ``source`` jailed and call ``entry(*args)`` for each ``args`` in ``cases`` (plain values)."""
    limits = limits or SandboxLimits()
    request = {"mode": "call", "source": source, "entry": entry, "cases": [_codec.encode(list(a)) for a in cases]}
    result = run(request, limits)
    outcomes: list[CaseOutcome | None] = [None] * len(cases)
    load_error = None
    for message in result.messages:
        if message.get("event") == "load_error" and load_error is None:
            load_error = str(message.get("error", "unknown error"))[:500]
            continue
        index = message.get("case")
        if type(index) is not int or not 0 <= index < len(cases) or outcomes[index] is not None:
            continue
        outcomes[index] = _outcome(message)
    return CallReport(outcomes=outcomes, load_error=load_error, run=result)


def _outcome(message: dict) -> CaseOutcome:
    if "error" in message:
        return CaseOutcome(error=str(message["error"])[:500])
    try:
        return CaseOutcome(value=_codec.decode(message.get("value")))
    except (ValueError, RecursionError) as e:
        return CaseOutcome(error=f"the return value could not be read back: {e}")
