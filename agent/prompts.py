"""Every instruction the agent gives the model, in one place.

The episode graph builds conversations from these; the exact messages sent are recorded on each
attempt, so training reproduces them without importing this module.

The reflect wording follows R3 (arXiv 2505.24726): say it failed, ask for a short reflection that
will help next time. The retry continues the *same* conversation with the reflection in context.
"""

from __future__ import annotations

import re

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
