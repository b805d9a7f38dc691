"""Task, Feedback and the Environment base class.

An environment is plain Python: subclass :class:`Environment`, implement two hooks
(`generate` builds one task's question and reference from a seeded RNG; `check` scores an
extracted answer) and register it. Everything else — deterministic sampling by seed, the
train/eval split, prompt building, answer extraction, and turning a malformed answer into
feedback instead of an exception — is done here once.

Design decisions
- Item ``i`` of a sample is built from ``Random(f"{name}:{seed}:{i}")``, so a task set is a pure
  function of (environment config, split, seed).
- The split of a task is a function of its *content* (a hash of the question), not of the seed:
  ``eval`` tasks can never appear in ``train`` whatever seeds are used. ``eval_fraction`` of the
  content space is held out.
- A wrong, empty or unparseable answer is the model's mistake: it becomes a ``Feedback`` with
  ``success=False`` and a message the model can read in its reflection. A bug in an environment
  raises.
- Model text can be anything: ``verify`` replaces lone surrogates (which UTF-8 cannot store) before any
  parsing, and extraction is linear in the length of the text however many tags are left open.
- Every check has a time limit, ``check_timeout_s`` (an option of every environment). An environment
  whose ``check`` runs in another process (``checks_out_of_process``: reasoning-gym, python_code)
  enforces it by killing that process. For an in-process check it is a SIGALRM timer on the main thread
  (a backstop for our own Python-level bugs: it cannot interrupt one long C call, which is why every
  scorer that may *evaluate* model text runs out of process); off the main thread it is not enforced.

Run ``selfevolve envs sample arithmetic -n 3`` to see tasks, ``selfevolve envs check`` to try a verifier.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import re
import signal
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

log = logging.getLogger(__name__)

Split = Literal["train", "eval"]
SPLITS: tuple[str, ...] = ("train", "eval")


class Message(BaseModel):
    """One chat message, as OpenAI-style chat APIs and chat templates take it."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str


class Task(BaseModel):
    """One problem an environment poses. Immutable and JSON-serialisable."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(description="Stable id derived from env name and content: the same task has the same id.")
    env: str = Field(description="Registered name of the environment that made it (with its options).")
    split: Split
    question: str = Field(description="The problem text the model sees (without system prompt).")
    prompt: list[Message] = Field(description="Chat messages of the first attempt.")
    reference: dict[str, Any] = Field(default_factory=dict, description="What the verifier needs; never shown.")
    difficulty: float = Field(default=0.0, description="Environment-defined difficulty (higher is harder).")
    metadata: dict[str, Any] = Field(default_factory=dict)

    def messages(self) -> list[dict[str, str]]:
        return [m.model_dump() for m in self.prompt]


def normalize_answer(answer: str) -> str:
    """The form answers are compared in against a pseudo-label (majority vote, trainer rewards): case,
    spacing, a trailing period and thousands commas.

    >>> normalize_answer("  1,024. ")
    '1024'
    >>> normalize_answer("Paris") == normalize_answer("paris.")
    True
    """
    text = " ".join(answer.split()).lower().rstrip(".")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", text):
        text = text.replace(",", "")
    return text


class Feedback(BaseModel):
    """The verdict on one answer. ``message`` is written for the model to read."""

    model_config = ConfigDict(extra="forbid")

    reward: float = Field(ge=-1.0, le=1.0)
    success: bool
    message: str
    answer: str | None = Field(default=None, description="The answer as extracted from the model's text.")
    reliable: bool = Field(
        default=True, description="False when a self-reward pseudo-label is too uncertain to train on."
    )
    label: str | None = Field(
        default=None,
        description="The pseudo-label a self-reward source judged against (majority: the normalised majority "
        "answer); None for the verifier and for sources without one (rubric, critique).",
    )

    @field_validator("message", "answer", "label")
    @classmethod
    def _storable(cls, text: str | None) -> str | None:
        """Self-reward sources quote model text: lone surrogates are replaced so the verdict can be stored."""
        return None if text is None else clean_text(text)

    @classmethod
    def failure(cls, message: str, answer: str | None = None, reward: float = 0.0, **fields: Any) -> Feedback:
        return cls(reward=reward, success=False, message=message, answer=answer, **fields)

    @classmethod
    def correct(cls, answer: str, message: str = "Correct.", **fields: Any) -> Feedback:
        return cls(reward=1.0, success=True, message=message, answer=answer, **fields)


class EnvConfig(BaseModel):
    """Options shared by every environment. Subclasses add their own fields."""

    model_config = ConfigDict(extra="forbid")

    eval_fraction: float = Field(
        default=0.2, gt=0.0, lt=1.0, description="Share of the task space held out for the eval split."
    )
    feedback_detail: Literal["informative", "bare"] = Field(
        default="informative",
        description="What the message of a failed answer says: informative = why it is wrong, never the right "
        "answer (the default); bare = only that it is wrong, as in the R3 paper.",
    )
    check_timeout_s: float = Field(
        default=10.0, gt=0.0, le=600.0, description="Seconds one answer's check may take; past it the answer scores 0."
    )


def validation_summary(error: ValidationError) -> str:
    """A pydantic error in one line (``key: problem (got value)``; several joined by ``; ``), so a CLI error or
    a log line stays one line.

    >>> try:
    ...     EnvConfig(eval_fraction=2, color="red")
    ... except ValidationError as e:
    ...     print(validation_summary(e))
    eval_fraction: Input should be less than 1 (got 2); color: unknown option (got 'red')
    """
    parts = []
    for err in error.errors():
        what = "unknown option" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        if not err["loc"]:  # a check across fields: its message names them
            parts.append(what)
            continue
        parts.append(f"{'.'.join(str(p) for p in err['loc'])}: {what} (got {repr(err['input'])[:60]})")
    return "; ".join(parts).replace("\n", " ")


BARE_FEEDBACK = "The answer is wrong."
"""The message of every failure under ``feedback_detail="bare"`` (R3's feedback says only that it failed)."""


def clean_text(text: str) -> str:
    """``text`` with lone surrogates (which UTF-8 cannot encode, so nothing can store) replaced by U+FFFD;
    a surrogate *pair* becomes the character it encodes.

    >>> clean_text("ok"), clean_text("a" + chr(0xD800) + "b"), clean_text(chr(0xD83D) + chr(0xDE00)) == chr(0x1F600)
    ('ok', 'a\ufffdb', True)
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def tag_spans(text: str, tag: str) -> list[str]:
    """The contents of every ``<tag>…</tag>`` (case-insensitive), as ``re.findall(r"<tag>(.*?)</tag>", re.S | re.I)``
    would return them, in one left-to-right pass: linear however many tags are left unclosed.

    >>> tag_spans("<answer>1</answer> <ANSWER>2 <answer>3</answer> <answer>4", "answer")
    ['1', '2 <answer>3']
    """
    opening, closing = _tag_patterns(tag)
    spans, pos = [], 0
    while (start := opening.search(text, pos)) is not None:
        end = closing.search(text, start.end())
        if end is None:
            break  # no closing tag after this one, so none after any later opening tag either
        spans.append(text[start.end() : end.start()])
        pos = end.end()
    return spans


_TAGS: dict[str, tuple[re.Pattern[str], re.Pattern[str]]] = {}


def _tag_patterns(tag: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    if tag not in _TAGS:
        _TAGS[tag] = (re.compile(re.escape(f"<{tag}>"), re.I), re.compile(re.escape(f"</{tag}>"), re.I))
    return _TAGS[tag]


class CheckTimeout(BaseException):
    """Raised into an in-process check that ran past its limit (a BaseException, so ``except Exception``
    in a check cannot swallow it)."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`CheckTimeout` in the block after ``seconds``, where a SIGALRM timer is ours to use
    (the main thread, no other timer or SIGALRM handler set); elsewhere the block runs unlimited."""
    usable = (
        threading.current_thread() is threading.main_thread()
        and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
        and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None)
    )
    if not usable:
        yield
        return
    armed = True

    def fire(signum: int, frame: Any) -> None:
        if armed:
            raise CheckTimeout(f"over {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Environment(ABC):
    """Base class: override ``generate`` and ``check``; optionally ``extract_answer``.

    Subclasses set ``name`` (the registry key), ``config_class`` (a pydantic model of options),
    ``system_prompt`` and ``answer_instruction`` (appended to each question).
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[EnvConfig]] = EnvConfig
    system_prompt: ClassVar[str | None] = "You are a careful assistant. Think briefly, then answer."
    answer_instruction: ClassVar[str] = "Give your final answer inside <answer></answer> tags."
    max_draws_per_task: ClassVar[int] = 200
    has_verifier: ClassVar[bool] = True  # False: `check` cannot judge answers; use a self-reward feedback source
    checks_out_of_process: ClassVar[bool] = False  # True: `check` enforces check_timeout_s itself, by a kill

    def __init__(self, **options: Any) -> None:
        try:
            self.config = self.config_class(**options)
        except ValidationError as e:
            from .option_errors import describe

            raise ValueError(describe(self.name, self.config_class, options, e)) from None

    # ----- the hooks -----
    @abstractmethod
    def generate(self, rng: random.Random) -> tuple[str, dict[str, Any], float]:
        """Build one task from ``rng``: (question, reference, difficulty)."""

    @abstractmethod
    def check(self, task: Task, answer: str) -> Feedback:
        """Score an extracted, non-empty answer against ``task.reference``."""

    # ----- defaults built on the hooks -----
    @property
    def spec(self) -> str:
        """Registry name plus non-default options, e.g. ``arithmetic:digits=2``: enough to rebuild it."""
        changed = self.config.model_dump(exclude_defaults=True)
        if not changed:
            return self.name
        return self.name + ":" + ",".join(f"{k}={v}" for k, v in sorted(changed.items()))

    def split_of(self, question: str) -> Split:
        h = int.from_bytes(hashlib.sha256(f"{self.name}\x00{question}".encode()).digest()[:8], "big")
        return "eval" if (h % 10_000) < self.config.eval_fraction * 10_000 else "train"

    def task_id(self, question: str) -> str:
        digest = hashlib.sha256(f"{self.spec}\x00{question}".encode()).hexdigest()[:16]
        return f"{self.name.replace(':', '-')}-{digest}"

    def build_prompt(self, question: str) -> list[Message]:
        msgs = []
        if self.system_prompt:
            msgs.append(Message(role="system", content=self.system_prompt))
        text = f"{question}\n\n{self.answer_instruction}" if self.answer_instruction else question
        msgs.append(Message(role="user", content=text))
        return msgs

    def make_task(self, question: str, reference: dict[str, Any], difficulty: float, split: Split) -> Task:
        return Task(
            id=self.task_id(question),
            env=self.spec,
            split=split,
            question=question,
            prompt=self.build_prompt(question),
            reference=reference,
            difficulty=float(difficulty),
        )

    def sample(self, n: int, split: Split = "train", seed: int = 0) -> list[Task]:
        """``n`` tasks of ``split``, deterministic in (config, split, seed).

        Draws candidates from ``Random(f"{name}:{seed}:{i}")`` for i = 0, 1, ... and keeps those whose
        content hashes into ``split``. Raises if the split looks empty (a tiny task space).
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        tasks: list[Task] = []
        i = 0
        budget = max(n, 1) * self.max_draws_per_task
        while len(tasks) < n:
            if i >= budget:
                raise RuntimeError(
                    f"{self.spec}: drew {i} candidates but found only {len(tasks)} {split} tasks; "
                    "the task space is too small for this split — widen the options or change eval_fraction"
                )
            question, reference, difficulty = self.generate(random.Random(f"{self.spec}:{seed}:{i}"))
            i += 1
            if self.split_of(question) == split:
                tasks.append(self.make_task(question, reference, difficulty, split))
        return tasks

    def extract_answer(self, text: str) -> str | None:
        """The last ``<answer>…</answer>`` span, stripped; ``None`` if there is none or it is empty."""
        found = tag_spans(text or "", "answer")
        if not found:
            return None
        answer = found[-1].strip()
        return answer or None

    def missing_answer_message(self, text: str) -> str:
        if not (text or "").strip():
            return "The response was empty. " + self.answer_instruction
        opening, closing = _tag_patterns("answer")
        if opening.search(text) and not closing.search(text):
            return "The <answer> tag was opened but never closed. " + self.answer_instruction
        return "No final answer was found in the response. " + self.answer_instruction

    def verify(self, task: Task, text: str) -> Feedback:
        """Extract the answer from model ``text`` and check it. Never raises for bad model output."""
        text = clean_text(text or "")
        answer = self.extract_answer(text)
        feedback = Feedback.failure(self.missing_answer_message(text)) if answer is None else self.timed_check(task, answer)
        return self.with_detail(feedback)

    def with_detail(self, feedback: Feedback) -> Feedback:
        """``feedback`` as ``feedback_detail`` wants it said: a bare failure keeps its reward, not its reason."""
        if feedback.success or self.config.feedback_detail == "informative":
            return feedback
        return feedback.model_copy(update={"message": BARE_FEEDBACK})

    def timed_check(self, task: Task, answer: str) -> Feedback:
        """``check`` under ``check_timeout_s`` (see the module docstring for what the limit means where)."""
        if self.checks_out_of_process:
            return self.check(task, answer)
        limit = self.config.check_timeout_s
        try:
            with time_limit(limit):
                return self.check(task, answer)
        except CheckTimeout:
            log.warning("%s: check of a %d-character answer ran past %g s (a bug in this environment)", self.spec, len(answer), limit)
            return Feedback.failure(f"Checking the answer took longer than {limit:g} s, so it scored 0.", answer=answer)

    def reformat(self, task: Task, text: str) -> str | None:
        """``text`` with its answer rewritten into the format ``answer_instruction`` asks for, or ``None``.

        Optional hook (default: ``None``, nothing to repair). An environment whose verifier rejects answers
        for their *form* (e.g. a right number outside ``<answer>`` tags) may return the same response with
        the answer it can read put into the required form. It must not change *what* the answer is: the
        trainer re-verifies the result and keeps it only if it succeeds, and never uses this on held-out
        tasks. This is how the SFT method learns an answer format from responses that were right in
        substance (``SelfEvolveSFTConfig.reformat_answers``; docs/learning_format.md).
        """
        return None

    def describe(self) -> str:
        doc = (type(self).__doc__ or "").strip().splitlines()
        return doc[0] if doc else ""

    def __repr__(self) -> str:
        return f"<Environment {self.spec}>"
