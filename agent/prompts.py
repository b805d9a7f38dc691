"""Every instruction the agent gives the model, and the conversations built from them, in one place.

The episode graph builds its calls with these functions; the exact messages sent are recorded on each
attempt, so training reproduces them without importing this module. The reflection ablation
(``python -m bench.experiments.reflection``) builds its arms with the same functions, so what it measures
is what the graph sends.

The reflect wording follows R3 (arXiv 2505.24726): say it failed, ask for a short reflection that will
help next time. What the retry sees is a design choice (:data:`RetryDesign`):

- ``conversation`` — R3's: the same conversation continues (question, failed answer, feedback request,
  reflection, "try again");
- ``fresh`` — one new user turn with the question, the feedback and the reflection, without the failed
  answer's text (a 135M model anchors on an answer it can see: docs/reflection.md).

:func:`retry_messages` also returns where the reflection sits in the messages (a :data:`Slot`), so the R3
trainer can put a *new* reflection in the same place whatever the design.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

Chat = list[dict[str, str]]
RetryDesign = Literal["conversation", "fresh"]
RETRY_DESIGNS: tuple[str, ...] = ("conversation", "fresh")
Slot = tuple[int, int, int]
"""(message index, start, end): the reflection is ``messages[i]["content"][start:end]``."""

HINTS_HEADER = "Solved examples of similar problems, from your memory (use them only if they help):"

CRITIQUE = (
    "Check the answer you just gave. Is it correct? Reply with exactly one line starting with "
    "'VERDICT: CORRECT' or 'VERDICT: INCORRECT', followed by one short sentence explaining why."
)

REFLECT = (
    "You tried to solve the problem above and failed.\n"
    "Feedback: {feedback}\n"
    "Reflect on what went wrong and write a short explanation that will help you do better next time. "
    "Do not give the final answer yet."
)

RETRY = "Now try again, using your reflection. {answer_instruction}"

FEEDBACK_RETRY = "That answer is wrong.\nFeedback: {feedback}\nTry again. {answer_instruction}"
"""The retry without a reflection (the ablation's arm b): feedback, then straight to a new answer."""

FRESH_RETRY_HEAD = "{question}\n\nAn earlier answer to this problem was wrong.\nFeedback: {feedback}\nWhat to do differently: "
FRESH_RETRY_TAIL = "\n\n{answer_instruction}"

_VERDICT = re.compile(r"VERDICT\s*:\s*(CORRECT|INCORRECT|WRONG|RIGHT)", re.IGNORECASE)


def with_hints(content: str, hints: list[str]) -> str:
    """Prepend retrieved experiences to the first user message."""
    if not hints:
        return content
    listed = "\n\n".join(f"Example {i}:\n{h}" for i, h in enumerate(hints, 1))
    return f"{HINTS_HEADER}\n\n{listed}\n\nNow your problem:\n{content}"


def parse_verdict(text: str) -> bool | None:
    """The critique's verdict: True (thinks it is right), False, or None if it gave none.

    >>> parse_verdict("VERDICT: INCORRECT because 3+4 is 7")
    False
    >>> parse_verdict("Looks fine to me") is None
    True
    """
    m = _VERDICT.search(text or "")
    if not m:
        return None
    return m.group(1).upper() in ("CORRECT", "RIGHT")


def _with_hints_in_last_user(messages: Sequence[dict[str, str]], hints: Sequence[str]) -> Chat:
    out = [dict(m) for m in messages]
    if hints:
        last = max(i for i, m in enumerate(out) if m["role"] == "user")
        out[last] = {"role": "user", "content": with_hints(out[last]["content"], list(hints))}
    return out


def reflect_messages(solve_messages: Sequence[dict[str, str]], answer: str, feedback: str,
                     hints: Sequence[str] = ()) -> Chat:
    """The reflect call: the attempt's conversation, its answer, then the feedback and the REFLECT request.

    ``hints`` (retrieved past successes) go into the REFLECT turn, so the reflection can draw on them.

    >>> reflect_messages([{"role": "user", "content": "q"}], "a", "wrong")[-1]["content"].splitlines()[1]
    'Feedback: wrong'
    """
    turn = {"role": "user", "content": REFLECT.format(feedback=feedback)}
    return [*(dict(m) for m in solve_messages), {"role": "assistant", "content": answer},
            *_with_hints_in_last_user([turn], hints)]


def retry_messages(design: RetryDesign, reflect_call: Sequence[dict[str, str]], reflection: str, *,
                   question: str, system: str | None, feedback: str, answer_instruction: str,
                   hints: Sequence[str] = ()) -> tuple[Chat, Slot]:
    """The retry call for ``design`` and where the reflection sits in it.

    ``reflect_call`` is the reflect call's input (:func:`reflect_messages`); ``conversation`` continues it,
    ``fresh`` starts over from the system prompt with one user turn (question, feedback, reflection,
    answer instruction; ``hints`` before them).

    >>> msgs, (i, a, b) = retry_messages("fresh", [], "carry the 1", question="What is 9 + 3?", system=None,
    ...                                  feedback="11 is wrong", answer_instruction="Answer in tags.")
    >>> msgs[i]["content"][a:b], "11 is wrong" in msgs[i]["content"]
    ('carry the 1', True)
    """
    if design == "conversation":
        msgs = [*(dict(m) for m in reflect_call), {"role": "assistant", "content": reflection},
                {"role": "user", "content": RETRY.format(answer_instruction=answer_instruction).strip()}]
        return msgs, (len(msgs) - 2, 0, len(reflection))
    if design != "fresh":
        raise ValueError(f"unknown retry design {design!r}; choose one of {', '.join(RETRY_DESIGNS)}")
    head = FRESH_RETRY_HEAD.format(question=question, feedback=feedback)
    if hints:
        head = with_hints(head, list(hints))
    content = head + reflection + FRESH_RETRY_TAIL.format(answer_instruction=answer_instruction)
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]
    return msgs, (len(msgs) - 1, len(head), len(head) + len(reflection))


def feedback_retry_messages(solve_messages: Sequence[dict[str, str]], answer: str, feedback: str,
                            answer_instruction: str) -> Chat:
    """A retry without reflection: the attempt's conversation, its answer, then feedback and "try again"."""
    return [*(dict(m) for m in solve_messages), {"role": "assistant", "content": answer},
            {"role": "user", "content": FEEDBACK_RETRY.format(feedback=feedback, answer_instruction=answer_instruction)}]


def substitute(messages: Sequence[dict[str, str]], slot: Slot, reflection: str) -> Chat:
    """``messages`` with the reflection at ``slot`` replaced by ``reflection`` (the R3 reward's retry prompt).

    >>> substitute([{"role": "user", "content": "A old B"}], (0, 2, 5), "new")[0]["content"]
    'A new B'
    """
    i, start, end = slot
    out = [dict(m) for m in messages]
    content = out[i]["content"]
    out[i] = {**out[i], "content": content[:start] + reflection + content[end:]}
    return out
