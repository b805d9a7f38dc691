"""``open_ended``: instruction following with rubrics — tasks that have no single right answer.

Each task is a writing instruction ("Write a short poem about autumn. Use at most 40 words. Do not use
the word 'leaf'.") built from templates and pools with the seeded ``rng``, and carries a rubric in
``reference["rubric"]``: a list of ``{"criterion": str, "points": float}`` items in the style of
arXiv 2509.25534 (points in [-10, 10]; a negative item describes something bad, and "met" means the bad
thing happened). Two kinds of item:

- **code-checkable** items carry a ``check`` key, e.g. ``{"name": "max_words", "n": 40}``: length in words
  or sentences, bullet count, required / forbidden words, starts with, ends with, all lowercase, no commas.
  ``check(task, answer)`` — this environment's programmatic verifier — scores *only these*.
- **free-form** items ("The content is accurate", "The response is a poem about autumn") have no
  ``check``: only a grader can judge them, so a run that should reward them needs a self-reward feedback
  source (``selfevolve run --env open_ended --feedback rubric``, see docs/self_reward.md). With the
  default verifier the reward covers the checkable part only.

Score (both here and in the rubric self-reward source): Σ met·points / Σ max(0, points), clipped to
[-1, 1]. ``check`` succeeds iff every positive checkable item is met and no negative one is triggered.
There are no answer tags: the whole response is the answer.

    selfevolve envs sample open_ended:checkable_items=3 -n 2
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import Field

from .base import EnvConfig, Environment, Feedback, Task
from .registry import register_environment


class OpenEndedConfig(EnvConfig):
    checkable_items: int = Field(
        default=2, ge=1, le=5, description="Rubric items a program can check (constraints added to the instruction)."
    )
    free_form_items: int = Field(
        default=2, ge=1, le=5, description="Rubric items only a grader can judge (the core request plus quality items)."
    )


# ----- the rubric score (shared with agent.feedback's rubric source) -----


def rubric_score(grades: Sequence[bool], items: Sequence[Mapping[str, Any]]) -> float:
    """Σ met·points / Σ max(0, points), clipped to [-1, 1] (arXiv 2509.25534).

    ``grades[i]`` says whether ``items[i]`` is met; for a negative item "met" means the penalty applies.
    With no positive item the denominator is Σ |points| (the score then lies in [-1, 0]).

    >>> items = [{"criterion": "a", "points": 5}, {"criterion": "b", "points": 3}, {"criterion": "c", "points": -4}]
    >>> rubric_score([True, False, False], items)
    0.625
    >>> rubric_score([True, True, True], items)
    0.5
    >>> rubric_score([False, False, True], items)
    -0.5
    """
    if len(grades) != len(items):
        raise ValueError(f"got {len(grades)} grades for {len(items)} rubric items")
    if not items:
        raise ValueError("rubric_score needs at least one rubric item")
    points = [float(item["points"]) for item in items]
    total = sum(max(0.0, p) for p in points) or sum(abs(p) for p in points)
    if total == 0:
        raise ValueError("every rubric item has 0 points")
    raw = sum(p for p, met in zip(points, grades, strict=True) if met) / total
    return max(-1.0, min(1.0, raw))


# ----- the code checks: name -> (text, **params) -> met -----

_WORD = re.compile(r"[A-Za-z0-9]+(?:['’-][A-Za-z0-9]+)*")
_SENTENCE_END = re.compile(r"(?<![.!?])[.!?]+(?=\s|$)")  # only from a run's start: linear on "!?!?…"
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+\S")


def word_count(text: str) -> int:
    """Words as runs of letters/digits (apostrophes and hyphens inside a word keep it one word).

    >>> word_count("It's a well-known fact, isn't it?")
    6
    """
    return len(_WORD.findall(text))


def sentence_count(text: str) -> int:
    """Sentences ended by . ! or ? (a trailing fragment without one counts too).

    >>> sentence_count("One. Two! Three? four")
    4
    >>> sentence_count("Version 2.0 is out.")
    1
    """
    parts = [p for p in _SENTENCE_END.split(text.strip()) if p.strip()]
    return len(parts)


def bullet_count(text: str) -> int:
    """Lines starting with '-', '*', '•' or '1.' / '1)' followed by text.

    >>> bullet_count("Intro\\n- one\\n* two\\n3) three\\n-nope")
    3
    """
    return sum(1 for line in text.splitlines() if _BULLET.match(line))


def _contains_word(text: str, word: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(word)}(?![A-Za-z0-9])", text, re.IGNORECASE) is not None


def _clean_end(text: str) -> str:
    return text.strip().strip("\"'”“ ").lower()


CHECKS: dict[str, Callable[..., bool]] = {
    "max_words": lambda text, n: word_count(text) <= n,
    "min_words": lambda text, n: word_count(text) >= n,
    "max_sentences": lambda text, n: sentence_count(text) <= n,
    "bullet_count": lambda text, n: bullet_count(text) == n,
    "contains_word": lambda text, word: _contains_word(text, word),
    "contains_text": lambda text, text_: text_ in text,
    "starts_with": lambda text, text_: text.strip().lower().startswith(text_.lower()),
    "ends_with": lambda text, text_: _clean_end(text).endswith(text_.lower()),
    "all_lowercase": lambda text: any(c.isalpha() for c in text) and text == text.lower(),
}


def run_check(check: Mapping[str, Any], text: str) -> bool:
    """Evaluate one item's ``check`` spec on ``text``. An unknown name is a bug in the task data: raises."""
    params = {("text_" if k == "text" else k): v for k, v in check.items() if k != "name"}
    fn = CHECKS.get(check.get("name", ""))
    if fn is None:
        raise KeyError(f"unknown rubric check {check.get('name')!r}; known: {', '.join(CHECKS)}")
    return fn(text, **params)


# ----- pools -----

# (instruction, core criterion). {topic} is filled from the form's own pool.
_FORMS: list[tuple[str, str, list[str]]] = [
    ("Write a short poem about {t}.", "The response is a poem about {t}.",
     ["autumn", "the sea", "a city at night", "friendship", "rain", "a mountain", "morning coffee", "old books"]),
    ("Explain {t} to a ten-year-old.", "The response explains {t} correctly in terms a child can follow.",
     ["photosynthesis", "gravity", "how rainbows form", "why we sleep", "what a computer program is",
      "how vaccines work", "the water cycle", "why the sky is blue"]),
    ("Describe the benefits of {t}.", "The response names several distinct, plausible benefits of {t}.",
     ["regular exercise", "reading every day", "learning a second language", "drinking water",
      "walking to work", "keeping a journal", "cooking at home", "getting enough sleep"]),
    ("Write a short product description for {t}.", "The response describes {t} as a product a customer could buy.",
     ["a reusable water bottle", "noise-cancelling headphones", "a folding bicycle", "a desk lamp",
      "a hiking backpack", "a ceramic teapot", "a solar phone charger", "a wool scarf"]),
    ("Give advice to someone who wants to {t}.", "The response gives practical, actionable advice on how to {t}.",
     ["start running", "save money", "learn to cook", "sleep better", "make new friends in a new city",
      "prepare for a job interview", "grow tomatoes", "read more books"]),
    ("Describe {t} to someone who has never been there.", "The response describes {t} vividly and concretely.",
     ["a busy train station", "a desert at dawn", "a small fishing village", "a rainforest",
      "a winter market", "a public library", "a mountain hut", "a night-time beach"]),
]

_QUALITY: list[tuple[str, float]] = [
    ("The response is clear and easy to follow.", 2),
    ("The content is accurate and makes no false claims.", 3),
    ("The response is specific rather than generic.", 2),
    ("The tone suits the request and the audience.", 2),
    ("The response is repetitive or padded with filler.", -2),
    ("The response contains factually incorrect statements.", -4),
    ("The response includes content unrelated to the request.", -3),
]

_WORDS = ["beautiful", "very", "really", "amazing", "good", "important", "simple", "great", "nice", "thing"]
_REQUIRED = ["because", "together", "today", "careful", "bright", "small", "quiet", "every"]
_OPENERS = ["Here is", "Imagine", "In short", "Picture this", "To begin"]
_CLOSERS = ["Thank you.", "That is all.", "Stay curious.", "Enjoy!", "The end."]


def _constraint(kind: str, rng: random.Random, used_words: set[str]) -> tuple[str, dict[str, Any]]:
    """(instruction sentence, rubric item) for one constraint kind."""
    if kind == "max_words":
        n = rng.choice([25, 40, 50, 60, 80])
        return f"Use at most {n} words.", {"criterion": f"Uses at most {n} words.", "points": 4,
                                          "check": {"name": "max_words", "n": n}}
    if kind == "min_words":
        n = rng.choice([30, 50, 80, 100])
        return f"Use at least {n} words.", {"criterion": f"Uses at least {n} words.", "points": 3,
                                           "check": {"name": "min_words", "n": n}}
    if kind == "max_sentences":
        n = rng.choice([2, 3, 4, 5])
        return f"Use at most {n} sentences.", {"criterion": f"Uses at most {n} sentences.", "points": 3,
                                              "check": {"name": "max_sentences", "n": n}}
    if kind == "bullet_count":
        n = rng.choice([3, 4, 5])
        return (f"Format the response as exactly {n} bullet points, each on its own line starting with '- '.",
                {"criterion": f"Is formatted as exactly {n} bullet points.", "points": 4,
                 "check": {"name": "bullet_count", "n": n}})
    if kind == "required_word":
        word = rng.choice([w for w in _REQUIRED if w not in used_words])
        used_words.add(word)
        return f"Include the word '{word}'.", {"criterion": f"Includes the word '{word}'.", "points": 3,
                                              "check": {"name": "contains_word", "word": word}}
    if kind == "starts_with":
        text = rng.choice(_OPENERS)
        return (f"Start your response with '{text}'.",
                {"criterion": f"Starts with '{text}'.", "points": 2, "check": {"name": "starts_with", "text": text}})
    if kind == "ends_with":
        text = rng.choice(_CLOSERS)
        return (f"End your response with the exact phrase '{text}'",
                {"criterion": f"Ends with '{text}'", "points": 2, "check": {"name": "ends_with", "text": text}})
    if kind == "all_lowercase":
        return ("Write everything in lowercase letters.",
                {"criterion": "Is written entirely in lowercase letters.", "points": 2, "check": {"name": "all_lowercase"}})
    if kind == "forbidden_word":
        word = rng.choice([w for w in _WORDS if w not in used_words])
        used_words.add(word)
        return (f"Do not use the word '{word}'.",
                {"criterion": f"Uses the forbidden word '{word}'.", "points": -3,
                 "check": {"name": "contains_word", "word": word}})
    if kind == "no_commas":
        return ("Do not use any commas.",
                {"criterion": "Contains a comma.", "points": -2, "check": {"name": "contains_text", "text": ","}})
    raise KeyError(kind)


# At most one constraint per group (two length limits or two layouts would contradict each other).
_GROUPS: dict[str, list[str]] = {
    "length": ["max_words", "min_words"],
    "layout": ["max_sentences", "bullet_count"],
    "include": ["required_word"],
    "start": ["starts_with"],
    "end": ["ends_with"],
    "case": ["all_lowercase"],
    "exclude": ["forbidden_word", "no_commas"],
}
_POSITIVE_GROUPS = ["length", "layout", "include", "start", "end", "case"]
_INCOMPATIBLE = {frozenset({"bullet_count", "starts_with"})}  # a bullet list cannot start with a phrase


@register_environment("open_ended")
class OpenEnded(Environment):
    """Instruction following with rubrics; code checks score the checkable items, a grader the rest."""

    config_class = OpenEndedConfig
    system_prompt = "You are a helpful assistant. Follow every instruction exactly."
    answer_instruction = "Reply with the requested text only, without any preamble."
    has_verifier = True  # partial: the code-checkable rubric items only (see module docstring)

    def generate(self, rng: random.Random) -> tuple[str, dict[str, Any], float]:
        cfg = self.config
        template, core, topics = rng.choice(_FORMS)
        topic = rng.choice(topics)

        # Checkable constraints: the first from a positive group, so every task has something to meet.
        first = rng.choice(_POSITIVE_GROUPS)
        rest = [g for g in _GROUPS if g != first]
        rng.shuffle(rest)
        kinds: list[str] = []
        for group in [first, *rest]:
            options = [k for k in _GROUPS[group] if not any(frozenset({k, o}) in _INCOMPATIBLE for o in kinds)]
            if options:
                kinds.append(rng.choice(options))
            if len(kinds) == cfg.checkable_items:
                break
        used_words: set[str] = set()
        sentences, checkable = [], []
        for kind in kinds:
            sentence, item = _constraint(kind, rng, used_words)
            sentences.append(sentence)
            checkable.append(item)

        free_form = [{"criterion": core.format(t=topic), "points": 5}]
        for text, points in rng.sample(_QUALITY, cfg.free_form_items - 1):
            free_form.append({"criterion": text, "points": points})

        question = " ".join([template.format(t=topic), *sentences])
        rubric = free_form + checkable
        return question, {"rubric": rubric}, float(len(checkable))

    def extract_answer(self, text: str) -> str | None:
        """The whole response, stripped; ``None`` if empty (there are no answer tags)."""
        answer = (text or "").strip()
        return answer or None

    def missing_answer_message(self, text: str) -> str:
        return "The response was empty. Write the requested text."

    def check(self, task: Task, answer: str) -> Feedback:
        """Score the code-checkable rubric items only; name the ones failed."""
        items = [item for item in task.reference["rubric"] if "check" in item]
        grades = [run_check(item["check"], answer) for item in items]
        reward = rubric_score(grades, items)
        missed = [i["criterion"] for i, met in zip(items, grades, strict=True) if i["points"] > 0 and not met]
        triggered = [i["criterion"] for i, met in zip(items, grades, strict=True) if i["points"] < 0 and met]
        if not missed and not triggered:
            return Feedback(reward=reward, success=True, message="Every checkable requirement is met.", answer=answer)
        parts = []
        if missed:
            parts.append("Requirements not met: " + " ".join(missed))
        if triggered:
            parts.append("Broken rules: " + " ".join(triggered))
        return Feedback(reward=reward, success=False, message=" ".join(parts), answer=answer)
