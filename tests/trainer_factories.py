"""Synthetic episodes and a small in-memory model registry for the trainer tests.

Episodes are built from real ``arithmetic`` tasks and follow the record invariant of
:mod:`memory.records`: the retry's input is ``reflect.messages + [assistant: reflection] + [retry
instruction]``. ``FakeLibrary`` has the same method names as :class:`memory.library.ExperienceLibrary`
for the parts the trainer uses; it lives here (tests only), the main path uses the real library.
"""

from __future__ import annotations

from pathlib import Path

from environments import Feedback, Task, get_environment
from memory.records import Attempt, Episode, ModelCall, ModelVersion

ENV = "arithmetic"
RETRY_INSTRUCTION = "Using your reflection, try again. Give the final number inside <answer></answer> tags."
REFLECT_INSTRUCTION = "Your answer was wrong. Reflect briefly on what went wrong."


def tasks(n: int, seed: int = 0) -> list[Task]:
    return get_environment(ENV).sample(n, split="train", seed=seed)


def correct_text(task: Task) -> str:
    return f"The result is <answer>{task.reference['value']}</answer>"


def wrong_text(task: Task) -> str:
    return f"The result is <answer>{task.reference['value'] + 1}</answer>"


def _attempt(index: int, messages: list[dict[str, str]], task: Task, success: bool) -> Attempt:
    text = correct_text(task) if success else wrong_text(task)
    fb = get_environment(ENV).verify(task, text)
    assert fb.success == success
    return Attempt(index=index, solve=ModelCall(node="solve" if index == 0 else "retry", messages=messages, output=text),
                   answer=fb.answer, feedback=fb)


def make_episode(
    task: Task,
    first_success: bool = False,
    reflection: str | None = "I added wrong; recompute carefully.",
    retry_success: bool | None = True,
) -> Episode:
    """First attempt; if it failed and ``reflection`` is given, a reflection and (unless
    ``retry_success`` is None) one retry that succeeds or fails."""
    first = _attempt(0, task.messages(), task, first_success)
    attempts = [first]
    if not first_success and reflection is not None:
        reflect_messages = [
            *task.messages(),
            {"role": "assistant", "content": first.solve.output},
            {"role": "user", "content": f"{first.feedback.message}\n{REFLECT_INSTRUCTION}"},
        ]
        first.reflect = ModelCall(node="reflect", messages=reflect_messages, output=reflection)
        if retry_success is not None:
            retry_messages = [
                *reflect_messages,
                {"role": "assistant", "content": reflection},
                {"role": "user", "content": RETRY_INSTRUCTION},
            ]
            attempts.append(_attempt(1, retry_messages, task, retry_success))
    return Episode(env=task.env, task=task, attempts=attempts)


def single_attempt_episode(env_spec: str, task: Task, text: str) -> Episode:
    """One first attempt answering ``text``, verified by ``env_spec`` (no reflection, no retry)."""
    fb = get_environment(env_spec).verify(task, text)
    return Episode(env=task.env, task=task, attempts=[
        Attempt(index=0, solve=ModelCall(node="solve", messages=task.messages(), output=text), answer=fb.answer,
                feedback=fb)])


def mixed_episodes(n_tasks: int = 4, seed: int = 0) -> list[Episode]:
    """Per task: one first-try success, one recovered (good reflection), one unrecovered (bad reflection)."""
    out: list[Episode] = []
    for t in tasks(n_tasks, seed):
        out.append(make_episode(t, first_success=True))
        out.append(make_episode(t, reflection="Good: I should add the digits again.", retry_success=True))
        out.append(make_episode(t, reflection="Bad: numbers are hard.", retry_success=False))
    return out


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


__all__ = ["FakeLibrary", "Feedback", "make_episode", "mixed_episodes", "tasks"]


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
