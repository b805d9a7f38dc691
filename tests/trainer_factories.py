"""Synthetic episodes and a small in-memory model registry for the trainer tests.

Episodes are built from real ``arithmetic`` tasks and follow the record invariant of
:mod:`memory.records`: the retry's input is ``reflect.messages + [assistant: reflection] + [retry
instruction]``. ``FakeLibrary`` has the same method names as :class:`memory.library.ExperienceLibrary`
for the parts the trainer uses; it lives here (tests only), the main path uses the real library.
"""

from __future__ import annotations

from pathlib import Path

from environments import Feedback
from memory.records import Episode, ModelVersion
from trainer.synthetic import (
    correct_text,
    make_episode,
    mixed_episodes,
    single_attempt_episode,
    tasks,
    wrong_text,
)


class FakeLibrary:
    """In-memory stand-in for ExperienceLibrary (episodes + model versions), tests only."""

    def __init__(self, workspace: str | Path, episodes: list[Episode] | None = None) -> None:
        self.workspace = Path(workspace)
        self._episodes = list(episodes or [])
        self._versions: dict[str, ModelVersion] = {
            "base": ModelVersion(id="base", status="base", method="base")
        }
        self.fail_on_add = False

    def episodes(self, env=None, success=None, first_success=None, model_version=None, run_id=None,
                 since=None, limit=None) -> list[Episode]:
        eps = [e for e in self._episodes if env is None or e.env == env]
        if success is not None:
            eps = [e for e in eps if e.success == success]
        if first_success is not None:
            eps = [e for e in eps if e.first_success == first_success]
        return eps[:limit] if limit else eps

    def record(self, episode: Episode) -> None:
        self._episodes.append(episode)

    def add_model_version(self, mv: ModelVersion) -> None:
        if self.fail_on_add:
            raise RuntimeError("injected failure in add_model_version")
        self._versions[mv.id] = mv

    def get_model_version(self, version_id: str) -> ModelVersion:
        if version_id not in self._versions:
            raise KeyError(f"unknown model version {version_id!r}")
        return self._versions[version_id]

    def list_model_versions(self) -> list[ModelVersion]:
        return sorted(self._versions.values(), key=lambda v: v.created_at)

    def set_model_status(self, version_id: str, status: str, note: str = "") -> None:
        mv = self.get_model_version(version_id)
        self._versions[version_id] = mv.model_copy(update={"status": status, "note": note or mv.note})

    def serving_version(self) -> ModelVersion:
        promoted = [v for v in self._versions.values() if v.status == "promoted"]
        return promoted[-1] if promoted else self._versions["base"]


__all__ = ["FakeLibrary", "Feedback", "correct_text", "make_episode", "mixed_episodes", "single_attempt_episode", "tasks",
           "wrong_text"]


# ----- fixtures (import them into a test module to use them) -----
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from trainer.models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("trainer-tiny"))


@pytest.fixture
def tiny_model(tiny_model_dir):
    from trainer.models import load_model_and_tokenizer

    return load_model_and_tokenizer(str(tiny_model_dir))
