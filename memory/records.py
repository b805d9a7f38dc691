"""The records the experience library stores: episodes, their attempts, and every model call.

Training later needs the *exact* prompts, so each model call keeps its input messages and output text.

Invariants the trainer relies on (the episode graph guarantees them and tests check them):
- ``attempts[k].solve`` is the call that produced attempt k's answer: the solve call for k = 0 and the
  retry call for k > 0 (its ``node`` says which). The field keeps its name so stored JSON loads as is.
- If attempt k failed and a reflection was written, ``attempts[k].reflect`` holds it, and the retry call
  ``attempts[k+1].solve`` contains it verbatim at ``reflection_slot`` (message index, start, end), whatever
  the retry design (agent/prompts.py): the retry prompt for a *new* reflection is
  ``put_reflection(retry.messages, retry.reflection_slot, new)``. Records written before the slot existed
  (``reflection_slot is None``) used the conversation design: ``reflect.messages + [assistant: reflect.output]
  + [retry instruction]``, i.e. the slot is the whole content of message ``len(reflect.messages)``
  (:func:`reflection_slot_of`).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from environments import Feedback, Task
from environments.base import clean_text

NodeName = Literal["solve", "critique", "reflect", "retry", "grade"]
Purpose = Literal["train", "eval"]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


class ModelCall(BaseModel):
    """One call of a graph node to the policy: exact input and output."""

    model_config = ConfigDict(extra="forbid")

    node: NodeName
    messages: list[dict[str, str]]
    output: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    model_version: str = "base"
    latency_s: float = 0.0
    reflection_slot: tuple[int, int, int] | None = Field(
        default=None, description="Retry calls: where the reflection sits in messages (index, start, end)."
    )

    @field_validator("output")
    @classmethod
    def _storable_output(cls, text: str) -> str:
        """Model text may hold lone surrogates, which UTF-8 (so SQLite, JSON) cannot encode: replaced, or
        the whole episode could not be recorded."""
        return clean_text(text)

    @field_validator("messages")
    @classmethod
    def _storable_messages(cls, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        return [{key: clean_text(value) for key, value in m.items()} for m in messages]


def put_reflection(messages: list[dict[str, str]], slot: tuple[int, int, int], reflection: str) -> list[dict[str, str]]:
    """``messages`` with the text at ``slot`` replaced by ``reflection`` (a retry prompt for a new reflection).

    >>> put_reflection([{"role": "user", "content": "A old B"}], (0, 2, 5), "new")[0]["content"]
    'A new B'
    """
    i, start, end = slot
    out = [dict(m) for m in messages]
    content = out[i]["content"]
    out[i] = {**out[i], "content": content[:start] + reflection + content[end:]}
    return out


def reflection_slot_of(reflect: ModelCall, retry: ModelCall) -> tuple[int, int, int] | None:
    """Where ``reflect.output`` sits in the retry call's messages: its recorded slot, else the conversation
    design's place (records written before slots existed); None if the reflection is not found there."""
    slot = retry.reflection_slot
    if slot is None:
        slot = (len(reflect.messages), 0, len(reflect.output))
    i, start, end = slot
    if i >= len(retry.messages) or retry.messages[i]["content"][start:end] != reflect.output:
        return None
    return slot


class Attempt(BaseModel):
    """One answer to the task, its self-critique, the environment's verdict, and the reflection on it."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0)
    solve: ModelCall = Field(description="The call that produced this attempt's answer: node 'solve' (k = 0) or 'retry'.")
    answer: str | None = Field(default=None, description="Answer extracted from solve.output, if any.")
    feedback: Feedback
    critique: ModelCall | None = None
    critique_verdict: bool | None = Field(default=None, description="The model's own verdict: True = it thinks it is right.")
    reflect: ModelCall | None = Field(default=None, description="Reflection written after this attempt failed.")
    ground_truth: Feedback | None = Field(
        default=None, description="Hidden verifier's verdict when feedback came from a self-reward source."
    )
    truncated: dict[str, int] = Field(
        default_factory=dict,
        description="Text fields cut to the episode config's max_stored_chars when stored: field path (e.g. "
        "'solve.output', 'reflect.messages[2].content') -> its length in characters before the cut. Empty: stored whole.",
    )


def cap_attempt(attempt: Attempt, limit: int) -> Attempt:
    """``attempt`` with every model-derived text field cut to its first ``limit`` characters, each cut named
    in ``truncated`` with its original length; the same object when nothing is longer.

    Why: one huge answer is repeated by the feedback loop (the answer, the critique's and the reflection's
    prompts, a conversation retry's prompt), so a 10 MB answer was stored ~20 times. The head is kept (the
    question, the start of the answer); the verdict was reached on the whole text before the cut.
    """
    cut = dict(attempt.truncated)

    def text(path: str, value: str | None) -> str | None:
        if value is None or len(value) <= limit:
            return value
        cut.setdefault(path, len(value))
        return value[:limit]

    def call(name: str, c: ModelCall | None) -> ModelCall | None:
        if c is None:
            return None
        messages = [{k: text(f"{name}.messages[{i}].{k}", v) or "" for k, v in m.items()} for i, m in enumerate(c.messages)]
        return c.model_copy(update={"messages": messages, "output": text(f"{name}.output", c.output)})

    def verdict(name: str, f: Feedback | None) -> Feedback | None:
        if f is None:
            return None
        return f.model_copy(update={"message": text(f"{name}.message", f.message), "answer": text(f"{name}.answer", f.answer),
                                    "label": text(f"{name}.label", f.label)})

    update = {"solve": call("solve", attempt.solve), "critique": call("critique", attempt.critique),
              "reflect": call("reflect", attempt.reflect), "answer": text("answer", attempt.answer),
              "feedback": verdict("feedback", attempt.feedback), "ground_truth": verdict("ground_truth", attempt.ground_truth)}
    if cut == attempt.truncated:
        return attempt
    return attempt.model_copy(update={**update, "truncated": cut})


class Episode(BaseModel):
    """One task, every attempt at it, and where it came from."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=lambda: new_id("ep"))
    run_id: str | None = None
    env: str
    task: Task
    model_version: str = "base"
    feedback_source: str = "verifier"
    attempts: list[Attempt] = Field(default_factory=list)
    retrieved_ids: list[str] = Field(default_factory=list, description="Experience ids shown as hints.")
    created_at: float = Field(default_factory=time.time)
    seconds: float = 0.0
    error: str | None = Field(default=None, description="Set when the episode failed for a reason that is not the model's.")
    purpose: Purpose = Field(
        default="train",
        description="train: experience to learn from (datasets, hints); eval: a measurement (never trained on). "
        "Held-out evaluations of model versions are not recorded at all (agent/cycle.py); 'eval' marks episodes a "
        "user ran on purpose to measure (`selfevolve run --split eval`) and older workspaces' recorded evaluations.",
    )
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _legacy_purpose(cls, data: Any) -> Any:
        """Episodes stored before ``purpose`` was a field said so in ``metadata["purpose"]``."""
        if isinstance(data, dict) and "purpose" not in data and (data.get("metadata") or {}).get("purpose") == "eval":
            return {**data, "purpose": "eval"}
        return data

    @property
    def success(self) -> bool:
        return bool(self.attempts) and self.attempts[-1].feedback.success

    @property
    def first_success(self) -> bool:
        return bool(self.attempts) and self.attempts[0].feedback.success

    @property
    def recovered(self) -> bool:
        """Failed the first attempt, succeeded on a retry."""
        return self.success and not self.first_success

    @property
    def tokens(self) -> int:
        total = 0
        for a in self.attempts:
            for call in (a.solve, a.critique, a.reflect):
                if call is not None:
                    total += call.prompt_tokens + call.completion_tokens
        return total

    @property
    def completion_tokens(self) -> int:
        return sum(
            c.completion_tokens for a in self.attempts for c in (a.solve, a.critique, a.reflect) if c is not None
        )

    def summary_text(self) -> str:
        """The text embedded in the vector index: the question plus what was learned."""
        parts = [self.task.question]
        for a in self.attempts:
            if a.reflect is not None:
                parts.append(f"Reflection: {a.reflect.output.strip()}")
        if self.success:
            parts.append(f"Solution: {self.attempts[-1].solve.output.strip()}")
        return "\n".join(parts)

    def hint_text(self, max_chars: int = 400) -> str:
        """What a later episode is shown when this one is retrieved (a failure is labelled as one)."""
        reflections = [a.reflect.output.strip() for a in self.attempts if a.reflect is not None]
        body = reflections[-1] if reflections else (self.attempts[-1].solve.output.strip() if self.attempts else "")
        label = "What worked" if self.success else "What did not work"
        text = f"Problem: {self.task.question}\n{label}: {body}"
        return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


class Run(BaseModel):
    """One invocation that produced episodes (``selfevolve run``, a daemon cycle, an eval)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=lambda: new_id("run"))
    kind: Literal["run", "daemon", "eval", "train"] = "run"
    env: str = ""
    model_version: str = "base"
    config: dict[str, Any] = Field(default_factory=dict)
    started_at: float = Field(default_factory=time.time)
    finished_at: float | None = None
    summary: dict[str, Any] = Field(default_factory=dict)


VersionStatus = Literal["base", "candidate", "promoted", "retired", "rejected"]


class ModelVersion(BaseModel):
    """A model the system can serve: the base, or a LoRA adapter (or full checkpoint) trained from a parent."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    id: str
    parent: str | None = None
    base_model: str = "default"
    method: str = "base"
    adapter_path: str | None = None
    status: VersionStatus = "candidate"
    episode_ids: list[str] = Field(default_factory=list, description="Episodes whose data trained it.")
    metrics: dict[str, Any] = Field(default_factory=dict)
    created_at: float = Field(default_factory=time.time)
    note: str = ""
