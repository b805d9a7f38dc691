"""Training datasets from recorded episodes: pure functions ``list[Episode] -> datasets.Dataset``.

Every builder returns TRL's *conversational* format (lists of ``{"role", "content"}`` messages), so
TRL renders prompts with the tokenizer's chat template exactly like the agent does. Design decisions:

- A prompt with no system message gets an empty one (:func:`environments.chat.with_system`), the rule
  the policy layer renders served prompts with; without it SmolLM2's template would inject its default
  system prompt and the trained prompt would differ from the served one.
- Training needs the exact prompts the policy saw, so prompts are the recorded ``ModelCall.messages``,
  never rebuilt from the task.
- Columns the rewards need ride along (TRL passes extra dataset columns to reward functions as keyword
  lists): ``task`` (the Task as JSON: :func:`task_column` writes it, :func:`task_of` reads it, once per
  distinct task), ``env`` (its environment spec), ``retry_template`` and ``retry_slot`` (the recorded
  retry input and where its reflection sits, see the invariant in :mod:`memory.records`), ``episode_id``.
- Self-reward (``Episode.feedback_source`` other than ``verifier``): feedback marked unreliable
  (``Feedback.reliable=False``, SRT's online filter) is never trained on — every builder skips the
  attempts whose verdict it would use (see each builder). The GRPO datasets (:func:`reflection_dataset`,
  :func:`first_attempt_dataset`) carry ``feedback_source`` and ``label`` (the pseudo-label) so the rewards
  in :mod:`trainer.rewards` reward agreement with the label instead of peeking at the hidden verifier;
  self-reward rows without a label (rubric, critique) are dropped from them (:func:`dropped_unlabelled`
  counts them for the error hint). :func:`rationalize` hints the reference answer and re-verifies with
  the environment, i.e. uses ground truth, so it only takes verifier-feedback episodes.

Builders: :func:`reflection_dataset` (R3 / GRPO on reflections), :func:`first_attempt_dataset` (plain
GRPO), :func:`sft_dataset` and :func:`rationalize` (STaR), :func:`dpo_dataset` (preference pairs).
"""

from __future__ import annotations

import functools
import itertools
import json
from collections import defaultdict
from collections.abc import Callable, Sequence

from datasets import Dataset

from environments import Task, get_environment
from environments.chat import with_system
from memory.records import Attempt, Episode, put_reflection, reflection_slot_of

Messages = list[dict[str, str]]
# One instance per env spec for everything that re-verifies (an env is a pure function of its spec).
environment_of = functools.lru_cache(maxsize=64)(get_environment)


def task_column(task: Task) -> str:
    """The ``task`` column: the Task as JSON, the one form that survives the dataset on disk (``save_to_disk``
    for resume) and TRL's column passing unchanged. :func:`task_of` is the only way back."""
    return task.model_dump_json()


@functools.lru_cache(maxsize=4096)
def task_of(column: str) -> Task:
    """The Task of a ``task`` column value, parsed once per distinct task (TRL passes columns every step)."""
    return Task.model_validate_json(column)


def assistant(text: str) -> Messages:
    return [{"role": "assistant", "content": text}]


def _usable(ep: Episode, env: str | None) -> bool:
    """Train only on training-split tasks of experience episodes: held-out tasks and measurements
    (``purpose == "eval"``) must never leak into the weights; nor text cut when stored (``Attempt.truncated``),
    which is not what the model wrote."""
    return (
        ep.error is None
        and bool(ep.attempts)
        and not any(a.truncated for a in ep.attempts)
        and ep.task.split == "train"
        and ep.purpose == "train"
        and (env is None or ep.task.env == env or ep.env == env)
    )


def _self_reward(ep: Episode) -> bool:
    return ep.feedback_source != "verifier"


def _label_row(ep: Episode, *attempts: Attempt) -> dict | None:
    """``feedback_source``/``label`` columns for a GRPO row, or None when a self-reward row has no label
    (nothing honest to reward against: the rewards would otherwise fall back to the hidden verifier)."""
    if not _self_reward(ep):
        return {"feedback_source": ep.feedback_source, "label": None}
    label = next((a.feedback.label for a in attempts if a.feedback.label is not None), None)
    if label is None:
        return None
    return {"feedback_source": ep.feedback_source, "label": label}


def dropped_unlabelled(episodes: Sequence[Episode], env: str | None = None) -> int:
    """How many usable self-reward episodes the GRPO datasets drop for lack of a pseudo-label."""
    return sum(_usable(ep, env) and _self_reward(ep) and all(a.feedback.label is None for a in ep.attempts)
               for ep in episodes)


def unlabelled_hint(episodes: Sequence[Episode], env: str | None, method: str) -> str | None:
    """Why a GRPO dataset came out empty when self-reward episodes were dropped (the rows carry no label)."""
    dropped = dropped_unlabelled(episodes, env)
    if not dropped:
        return None
    return (f"{dropped} self-reward episode(s) (rubric/critique feedback) have no pseudo-label for the {method} "
            "reward and were dropped; train them with sft or dpo, or collect with --feedback majority or verifier")


def _from_rows(rows: list[dict], columns: Sequence[str]) -> Dataset:
    if not rows:  # an empty Dataset still has the schema, so callers can check len() and the columns
        return Dataset.from_dict({c: [] for c in columns})
    return Dataset.from_list(rows)


REFLECTION_COLUMNS = ("prompt", "task", "env", "retry_template", "retry_slot", "episode_id", "recorded_reflection",
                      "recorded_retry_success", "feedback_source", "label")


def reflection_dataset(episodes: Sequence[Episode], env: str | None = None) -> Dataset:
    """One row per episode whose first attempt failed, has a reflection and a recorded retry.

    ``prompt`` is the recorded reflect input (the completion to learn IS the reflection); ``retry_template``
    is the recorded retry input and ``retry_slot`` where the reflection sits in it, so the retry prompt for a
    new reflection ``r`` is ``put_reflection(retry_template, retry_slot, r)`` (:func:`retry_prompt`) —
    whatever retry design the episode used (see the invariant in :mod:`memory.records`).
    Episodes with no retry recorded are dropped, as are those whose retry does not hold the reflection where
    the invariant says, those whose first or retry feedback is unreliable (the "failure" may be no judgement
    at all), and self-reward episodes without a pseudo-label (``label``: the first attempt's, else the retry's).
    """
    rows = []
    for ep in episodes:
        if not _usable(ep, env) or ep.first_success or len(ep.attempts) < 2:
            continue
        first, retry = ep.attempts[0], ep.attempts[1]
        if first.reflect is None or not retry.solve.messages:
            continue
        slot = reflection_slot_of(first.reflect, retry.solve)
        if slot is None or not (first.feedback.reliable and retry.feedback.reliable):
            continue
        labelled = _label_row(ep, first, retry)
        if labelled is None:
            continue
        template = with_system(retry.solve.messages)
        shift = len(template) - len(retry.solve.messages)  # an empty system turn put in front
        rows.append({
            "prompt": with_system(first.reflect.messages),
            "task": task_column(ep.task),
            "env": ep.task.env,
            "retry_template": template,
            "retry_slot": [slot[0] + shift, slot[1], slot[2]],
            "episode_id": ep.id,
            "recorded_reflection": first.reflect.output,
            "recorded_retry_success": retry.feedback.success,
            **labelled,
        })
    return _from_rows(rows, REFLECTION_COLUMNS)


def retry_prompt(template: Messages, slot: Sequence[int], reflection: str) -> Messages:
    """The retry input for a new reflection: the recorded retry input with ``reflection`` at ``slot``.

    >>> retry_prompt([{"role": "user", "content": "q"}, {"role": "assistant", "content": "old"}], [1, 0, 3], "r")[1]
    {'role': 'assistant', 'content': 'r'}
    """
    i, start, end = (int(x) for x in slot)
    return put_reflection(list(template), (i, start, end), reflection)


FIRST_ATTEMPT_COLUMNS = ("prompt", "task", "env", "episode_id", "feedback_source", "label")


def first_attempt_dataset(episodes: Sequence[Episode], env: str | None = None, unique_tasks: bool = True) -> Dataset:
    """One row per episode (per task if ``unique_tasks``): the recorded first-attempt prompt.

    Episodes whose first feedback is unreliable, and self-reward episodes without a pseudo-label, are
    skipped (the task may still come from another episode of it)."""
    rows, seen = [], set()
    for ep in episodes:
        if not _usable(ep, env) or (unique_tasks and ep.task.id in seen) or not ep.attempts[0].feedback.reliable:
            continue
        labelled = _label_row(ep, ep.attempts[0])
        if labelled is None:
            continue
        seen.add(ep.task.id)
        rows.append({"prompt": with_system(ep.attempts[0].solve.messages), "task": task_column(ep.task),
                     "env": ep.task.env, "episode_id": ep.id, **labelled})
    return _from_rows(rows, FIRST_ATTEMPT_COLUMNS)


SFT_COLUMNS = ("prompt", "completion", "episode_id", "kind")


def sft_dataset(episodes: Sequence[Episode], env: str | None = None, reformat: bool = False) -> Dataset:
    """Successful trajectories (STaR / rejection-sampling fine-tuning): the successful solve call.

    The prompt is that call's recorded input (for a recovered episode it contains the failed attempt and
    the reflection, so the model learns to use its reflection); the completion is its output
    (``kind="success"``). A success whose feedback is unreliable is skipped.

    ``reformat``: also keep a failed *first* attempt that was right in substance but not in form — its
    environment's :meth:`~environments.Environment.reformat` rewrites the answer into the required format
    and the rewritten text must then pass the verifier (``kind="reformatted"``: the model's own words and
    answer, the format fixed). Like :func:`rationalize` this consults the verifier, so it only takes
    verifier-feedback episodes; at most one such row per episode.
    """
    rows = []
    for ep in episodes:
        if not _usable(ep, env):
            continue
        if ep.success and ep.attempts[-1].feedback.reliable:
            call = ep.attempts[-1].solve
            rows.append({"prompt": with_system(call.messages), "completion": assistant(call.output),
                         "episode_id": ep.id, "kind": "success"})
        if reformat and not ep.first_success and not _self_reward(ep):
            first = ep.attempts[0].solve
            environment = environment_of(ep.task.env)
            fixed = environment.reformat(ep.task, first.output)
            if fixed is not None and environment.verify(ep.task, fixed).success:
                rows.append({"prompt": with_system(first.messages), "completion": assistant(fixed),
                             "episode_id": ep.id, "kind": "reformatted"})
    return _from_rows(rows, SFT_COLUMNS)


def default_hint(task: Task) -> str:
    """A generic answer hint for STaR rationalisation built from the task's reference data."""
    ref = {k: v for k, v in task.reference.items() if not k.startswith("_")}
    return f"(Hint: the reference solution is {json.dumps(ref, default=str)}. Explain how to reach it.)"


def rationalize(
    episodes: Sequence[Episode],
    generate: Callable[[list[Messages]], list[str]],
    hint: Callable[[Task], str] = default_hint,
    env: str | None = None,
) -> Dataset:
    """STaR rationalisation: retry failed tasks with the answer hinted; keep verified outputs WITHOUT the hint.

    ``generate`` maps a batch of chats to one completion each (e.g. a wrapper around the policy).
    Rows are in the :func:`sft_dataset` format: ``prompt`` is the original first-attempt prompt (no hint).
    Only verifier-feedback episodes with reliable feedback are used: the hint and the check are ground
    truth, which a self-reward run must not train on.
    """
    failed = [ep for ep in episodes if _usable(ep, env) and not ep.success and not _self_reward(ep)
              and ep.attempts[-1].feedback.reliable]
    hinted = []
    for ep in failed:
        msgs = with_system(ep.attempts[0].solve.messages)
        last = msgs[-1]
        msgs[-1] = {"role": last["role"], "content": f"{last['content']}\n\n{hint(ep.task)}"}
        hinted.append(msgs)
    outputs = generate(hinted) if hinted else []
    if len(outputs) != len(hinted):
        raise ValueError(f"generate returned {len(outputs)} completions for {len(hinted)} prompts")
    rows = []
    for ep, text in zip(failed, outputs, strict=True):
        if environment_of(ep.task.env).verify(ep.task, text).success:
            rows.append({"prompt": with_system(ep.attempts[0].solve.messages), "completion": assistant(text),
                         "episode_id": ep.id, "kind": "rationalized"})
    return _from_rows(rows, SFT_COLUMNS)


DPO_COLUMNS = ("prompt", "chosen", "rejected", "kind", "task_id", "episode_ids")


def dpo_dataset(
    episodes: Sequence[Episode], env: str | None = None, max_pairs_per_task: int = 4, strict_prompts: bool = False
) -> Dataset:
    """Preference pairs per task, in TRL's conversational format (``prompt``/``chosen``/``rejected``).

    - ``kind="reflection"``: a first-attempt reflection whose retry succeeded vs one whose retry failed;
    - ``kind="answer"``: a successful answer (first try, or the answer of a successful retry) vs a failed
      first answer.
    The prompt is the chosen side's recorded prompt. Recorded prompts of two episodes of one task may
    differ (a different failed answer, retrieved hints); ``strict_prompts=True`` keeps only pairs whose
    prompts are identical. At most ``max_pairs_per_task`` pairs of each kind per task. Unreliable feedback
    is never a side: an episode whose first feedback is unreliable is skipped, an unreliable retry gives
    no reflection pair.
    """
    by_task: dict[str, list[Episode]] = defaultdict(list)
    for ep in episodes:
        if _usable(ep, env):
            by_task[ep.task.id].append(ep)
    rows = []
    for task_id, eps in by_task.items():
        good_refl, bad_refl, good_ans, bad_ans = [], [], [], []
        for ep in eps:
            first = ep.attempts[0]
            if not first.feedback.reliable:  # no judgement on the first answer: neither chosen nor rejected
                continue
            prompt0 = with_system(first.solve.messages)
            if first.feedback.success:
                good_ans.append((prompt0, first.solve.output, ep.id))
                continue
            bad_ans.append((prompt0, first.solve.output, ep.id))
            if first.reflect is not None and len(ep.attempts) > 1 and ep.attempts[1].feedback.reliable:
                side = good_refl if ep.attempts[1].feedback.success else bad_refl
                side.append((with_system(first.reflect.messages), first.reflect.output, ep.id))
                if ep.attempts[1].feedback.success:
                    good_ans.append((prompt0, ep.attempts[1].solve.output, ep.id))
        for kind, good, bad in (("reflection", good_refl, bad_refl), ("answer", good_ans, bad_ans)):
            pairs = [(g, b) for g, b in itertools.product(good, bad) if not strict_prompts or g[0] == b[0]]
            for g, b in pairs[:max_pairs_per_task]:
                rows.append({"prompt": g[0], "chosen": assistant(g[1]), "rejected": assistant(b[1]), "kind": kind,
                             "task_id": task_id, "episode_ids": [g[2], b[2]]})
    return _from_rows(rows, DPO_COLUMNS)


def episode_ids(dataset: Dataset) -> list[str]:
    """Distinct episode ids a dataset was built from (recorded on the model version)."""
    col = "episode_ids" if "episode_ids" in dataset.column_names else "episode_id"
    ids: list[str] = []
    for value in dataset[col] if len(dataset) else []:
        ids.extend(value if isinstance(value, list) else [value])
    return list(dict.fromkeys(ids))
