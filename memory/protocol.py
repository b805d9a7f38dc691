"""The experience library as other packages see it: typing Protocols, not the concrete class.

Consumers (the episode graph, the daemon, the trainer, the model registry, the cycle) type their
``library`` argument with these, so a second implementation (a remote library, a cached one) is checked
against one contract instead of whatever each caller happened to call. :class:`memory.library.
ExperienceLibrary` implements :class:`Library`; ``tests/test_memory_protocol.py`` checks that its
signatures match, and every test that needs a library uses the real one.

- :class:`ModelVersions` — the model registry's storage (``trainer.registry`` needs only this).
- :class:`Library` — episodes, search, runs and model versions.

    from memory.protocol import Library
    def train(library: Library, ...): ...
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from memory.records import Episode, ModelVersion, Run, VersionStatus

if TYPE_CHECKING:
    from memory.library import SearchHit


@runtime_checkable
class ModelVersions(Protocol):
    """Where model versions are stored: register, read, change status, find the served one."""

    def add_model_version(self, mv: ModelVersion) -> ModelVersion: ...

    def get_model_version(self, version_id: str) -> ModelVersion:
        """KeyError naming the known versions if ``version_id`` is unknown."""
        ...

    def list_model_versions(self) -> list[ModelVersion]:
        """Oldest first, the base included."""
        ...

    def set_model_status(self, version_id: str, status: VersionStatus, note: str = "") -> ModelVersion: ...

    def serving_version(self) -> ModelVersion:
        """The most recently promoted version, else the base."""
        ...


@runtime_checkable
class Library(ModelVersions, Protocol):
    """The experience library: every episode (SQLite truth), searchable (vector index), plus runs and versions."""

    workspace: Path

    def record(self, episode: Episode) -> str:
        """Store ``episode`` atomically (idempotent by id) and index it; returns its id."""
        ...

    def get(self, episode_id: str) -> Episode: ...

    def episodes(
        self, env: str | None = None, success: bool | None = None, first_success: bool | None = None,
        model_version: str | None = None, run_id: str | None = None, since: float | None = None,
        limit: int | None = None,
    ) -> list[Episode]:
        """Episodes matching every given filter, oldest first."""
        ...

    def count(
        self, env: str | None = None, success: bool | None = None, first_success: bool | None = None,
        model_version: str | None = None, run_id: str | None = None, since: float | None = None,
    ) -> int: ...

    def search(
        self, text: str, env: str | None = None, success: bool | None = None, k: int = 5,
        model_version: str | None = None, *, first_success: bool | None = None, since: float | None = None,
    ) -> list[SearchHit]:
        """The ``k`` recorded episodes most similar to ``text``, best first."""
        ...

    def sync(self, env: str | None = None, progress: Callable[[int], None] | None = None) -> int:
        """Repair the index from SQLite; returns how many episodes were (re)indexed."""
        ...

    def start_run(self, run: Run) -> Run: ...

    def finish_run(self, run_id: str, summary: dict[str, Any] | None = None) -> Run: ...

    def get_run(self, run_id: str) -> Run:
        """KeyError if ``run_id`` is unknown."""
        ...

    def close(self) -> None: ...
