"""Export of the experience library: JSONL (one Episode a line) and Hugging Face ``datasets`` on disk.

``training_row`` flattens an episode into the columns the trainer's dataset builders read; the row keeps
the whole episode in ``episode_json``, so nothing is lost for methods that need more.

    selfevolve memory export data/episodes.jsonl --env countdown --success
    selfevolve memory export data/reflections --format hf --failure-first
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from memory.records import Episode

Progress = Callable[[int], None]


def training_row(ep: Episode) -> dict[str, Any]:
    """Flat columns for a training dataset (one row per episode); ``episode_json`` keeps everything."""
    first = ep.attempts[0] if ep.attempts else None
    last = ep.attempts[-1] if ep.attempts else None
    reflect = next((a.reflect for a in ep.attempts if a.reflect is not None), None)
    retry = ep.attempts[1] if len(ep.attempts) > 1 else None
    return {
        "episode_id": ep.id, "env": ep.env, "task_id": ep.task.id, "split": ep.task.split,
        "question": ep.task.question, "prompt": ep.task.messages(),
        "reference": json.dumps(ep.task.reference), "model_version": ep.model_version, "run_id": ep.run_id or "",
        "first_messages": first.solve.messages if first else [], "first_output": first.solve.output if first else "",
        "first_answer": (first.answer or "") if first else "",
        "first_feedback": first.feedback.message if first else "",
        "first_reward": first.feedback.reward if first else 0.0,
        "first_success": ep.first_success, "success": ep.success, "recovered": ep.recovered,
        "reflection_messages": reflect.messages if reflect else [], "reflection": reflect.output if reflect else "",
        "retry_messages": retry.solve.messages if retry else [], "retry_output": retry.solve.output if retry else "",
        "final_answer": (last.answer or "") if last else "", "final_reward": last.feedback.reward if last else 0.0,
        "n_attempts": len(ep.attempts), "tokens": ep.tokens, "created_at": ep.created_at,
        "episode_json": ep.model_dump_json(),
    }


def write_jsonl(path: Path, pages: Iterable[list[Episode]], progress: Progress | None) -> int:
    """Write episodes to ``path`` (atomically: a ``.partial`` file renamed at the end)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    tmp = path.with_name(path.name + ".partial")
    with tmp.open("w", encoding="utf-8") as f:
        for page in pages:
            f.writelines(ep.model_dump_json() + "\n" for ep in page)
            n += len(page)
            if progress:
                progress(len(page))
    tmp.replace(path)
    return n


def write_hf(path: Path, pages: Iterable[list[Episode]], progress: Progress | None) -> int:
    """Write :func:`training_row` rows as a ``datasets.Dataset`` saved to ``path``."""
    import datasets

    parts = []
    for page in pages:
        parts.append(datasets.Dataset.from_list([training_row(ep) for ep in page]))
        if progress:
            progress(len(page))
    if not parts:
        raise ValueError("no episodes match the filters: nothing to export")
    dataset = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    dataset.save_to_disk(str(path))
    return len(dataset)
