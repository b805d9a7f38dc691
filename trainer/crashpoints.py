"""Named crash points for fault-injection tests: ``SELFEVOLVE_CRASH_AT=register.renamed`` SIGKILLs the process there.

    SELFEVOLVE_CRASH_AT=register.renamed selfevolve daemon -w ws -c d.toml   # dies like kill -9 at that line

Why: the windows between the durable steps of train → register → gate → promote are a few microseconds
wide; a random kill almost never lands in them. A crash point makes a kill land exactly there, in a
real process (no cleanup, no ``finally``, no atexit), so a test can prove each window recovers on restart.
Unset (always, outside tests) a crash point is one dictionary lookup. The points are listed in
:data:`POINTS` in the order one training cycle passes them.
"""

from __future__ import annotations

import os
import signal
import sys

ENV = "SELFEVOLVE_CRASH_AT"

POINTS = (
    "train.started",      # agent/daemon/training.py: train_started_at saved, trainer not yet run
    "register.saved",     # trainer/registry.py: adapter + manifest in .tmp-*, not renamed
    "register.renamed",   # trainer/registry.py: models/<id>/ in place, no registry row
    "register.added",     # trainer/registry.py: row added, the daemon's state not yet saved
    "gate.decided",       # agent/cycle.py: both versions evaluated, decision not applied
    "promote.between",    # trainer/registry.py: candidate promoted, the previous one not yet retired
    "gate.applied",       # agent/daemon/loop.py: gate applied, phase not yet saved as finish
    "cycle.finishing",    # agent/daemon/state.py: the cycle's run finished in SQLite, state.json not yet saved
)


def crashpoint(name: str) -> None:
    """SIGKILL this process if ``$SELFEVOLVE_CRASH_AT`` names ``name`` (says so on stderr first)."""
    if os.environ.get(ENV) == name:
        sys.stderr.write(f"crashpoint {name}: SIGKILL\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
