"""The experience library: every episode in SQLite (the truth), searchable through a Chroma index.

    from memory import ExperienceLibrary
    with ExperienceLibrary(".selfevolve") as lib:
        lib.record(episode)
        hits = lib.search("two-digit addition with carries", env="arithmetic", success=True, k=3)

CLI: ``selfevolve memory stats|search|show|export|reindex``. ``ExperienceLibrary`` and ``SearchHit`` are
imported lazily, so ``from memory.records import Episode`` does not pay for importing chromadb.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from memory import records
from memory.records import Attempt, Episode, ModelCall, ModelVersion, Run

if TYPE_CHECKING:
    from memory.library import ExperienceLibrary, SearchHit

__all__ = ["Attempt", "Episode", "ExperienceLibrary", "ModelCall", "ModelVersion", "Run", "SearchHit", "records"]


def __getattr__(name: str) -> Any:
    if name in ("ExperienceLibrary", "SearchHit"):
        from memory import library

        return getattr(library, name)
    raise AttributeError(f"module 'memory' has no attribute {name!r}")
