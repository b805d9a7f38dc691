"""What the study writes: one JSONL file per (env, stage), appended as generations finish.

``<out>/<env slug>/first.jsonl``   one line per first attempt (successes too: they give first-try accuracy)
``<out>/<env slug>/<arm>.jsonl``   one line per second attempt: failure index, sample index, texts, verdict
A killed run loses at most the batch in flight; a line is only ever appended whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from environments import Task


def env_dir(out: Path, spec: str) -> Path:
    slug = re.sub(r"[^a-zA-Z0-9_.-]+", "_", spec)[:48].strip("_")
    return out / f"{slug}-{hashlib.sha1(spec.encode()).hexdigest()[:6]}"


def append(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    with path.open("a", encoding="utf-8") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def read(path: Path) -> list[dict[str, Any]]:
    """Every whole line of ``path`` (a torn last line from a kill is skipped)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


@dataclass
class FirstAttempt:
    """One task's first attempt and both feedback messages (informative and bare) on it."""

    draw: int
    task: dict[str, Any]
    output: str
    success: bool
    feedback: str
    bare_feedback: str
    answer: str | None
    completion_tokens: int

    @property
    def task_obj(self) -> Task:
        return Task.model_validate(self.task)

    def to_row(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Sample:
    """One second attempt of one arm at one failure."""

    failure: int  # index into the env's failures (first attempts that failed, in draw order)
    j: int  # sample index 0..k-1
    arm: str
    output: str
    success: bool
    answer: str | None
    reflection: str | None = None
    hints: int = 0
    completion_tokens: int = 0

    def to_row(self) -> dict[str, Any]:
        return asdict(self)
