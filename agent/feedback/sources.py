"""The built-in feedback sources for tasks without a (complete) verifier: the policy rewards itself.

The episode graph's verify node asks a :class:`agent.graph.FeedbackSource` for
``(feedback the agent acts on, hidden ground truth or None)``. ``None`` as the source means the
environment's programmatic verifier. The self-reward sources here:

- ``majority`` — SRT (arXiv 2505.21444): sample ``k`` more answers to the same prompt, the most common
  parsed answer is the pseudo-label, reward 1 if this attempt agrees. Online filter: when the label's
  share of the votes is below ``threshold`` (0.6, the paper's), the feedback is reward 0 / failure with
  ``Feedback.reliable=False`` (the truth the trainer's datasets skip on; the model-facing message also
  starts with :data:`UNRELIABLE`). ``Feedback.label`` carries the normalised pseudo-label, so the trainer
  can reward agreement with it instead of peeking at the hidden verifier.
- ``rubric`` — arXiv 2509.25534: the policy grades its own response against each item of
  ``task.reference["rubric"]`` (MET / NOT MET, one batched call); reward Σ met·points / Σ max(0, points).
- ``critique`` — the policy's own ``VERDICT: CORRECT/INCORRECT`` on its answer.

Every source also returns the environment's verdict (``env.verify``) as hidden ground truth when the
environment has a verifier (``has_verifier``, default True; for ``open_ended`` it scores only the
code-checkable rubric items), so the generation–verification gap, and SRT's collapse signature
(pseudo-reward up, true accuracy down), can be measured. A model's mistake (no answer, an unparseable
grade) is Feedback; a bad option or a task without a rubric is a user error and raises.

Each registers itself with :func:`agent.feedback.registry.register_feedback_source`; a new source is one
more decorated class (here or in a plug-in package, see the registry).

    selfevolve run --env open_ended --feedback rubric
    selfevolve run --env arithmetic --feedback majority:k=8,threshold=0.6
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from agent import prompts
from agent.feedback.registry import register_feedback_source
from agent.graph import GraphDeps
from agent.policy.base import Policy, SamplingParams
from environments import Environment, Feedback, Task, normalize_answer
from environments.open_ended import rubric_score

UNRELIABLE = "[unreliable pseudo-label]"
"""Prefix of a majority feedback message whose vote fell below the agreement threshold (skip in training)."""

RUBRIC_GRADE = (
    "You are grading a response against one criterion.\n\n"
    "Task:\n{question}\n\nResponse:\n{response}\n\nCriterion: {criterion}\n\n"
    "Does the response meet this criterion? Answer MET or NOT MET."
)

_GRADE = re.compile(r"\b(NOT\s+MET|UNMET|MET)\b", re.IGNORECASE)


# ----- pure helpers -----


def majority_label(answers: Sequence[str]) -> tuple[str, float]:
    """The most common answer and its share of the votes; ties go to the answer seen first.

    >>> majority_label(["7", "5", "7", "7", "3"])
    ('7', 0.6)
    >>> majority_label(["a", "b"])
    ('a', 0.5)
    """
    if not answers:
        raise ValueError("majority_label needs at least one answer")
    counts = Counter(answers)  # insertion-ordered, so most_common's ties keep first appearance
    label, votes = counts.most_common(1)[0]
    return label, votes / len(answers)


def parse_grade(text: str) -> bool | None:
    """A grader's verdict on one rubric item: True (MET), False (NOT MET) or None (no verdict).

    >>> parse_grade("NOT MET - it uses 60 words"), parse_grade("Met."), parse_grade("unsure")
    (False, True, None)
    """
    m = _GRADE.search(text or "")
    if m is None:
        return None
    return m.group(1).upper() == "MET"


def is_unreliable(feedback: Feedback) -> bool:
    """True for feedback a self-reward source marked as too uncertain to train on (``Feedback.reliable``)."""
    return not feedback.reliable


def ground_truth(environment: Environment, task: Task, output: str) -> Feedback | None:
    """The environment's verdict when it has a verifier, else None (nothing to measure the gap against)."""
    if not getattr(environment, "has_verifier", True):
        return None
    return environment.verify(task, output)


# ----- options -----


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


class MajorityOptions(_Options):
    k: int = Field(default=4, ge=1, le=64, description="Extra answers sampled per attempt (the vote has k + 1).")
    temperature: float = Field(default=1.0, ge=0, le=2, description="Sampling temperature of the extra answers.")
    threshold: float = Field(
        default=0.6, gt=0, le=1, description="Agreement below this marks the pseudo-label unreliable (SRT: 0.6)."
    )
    reveal_majority: bool = Field(
        default=False, description="Name the majority answer in the feedback (the retry can then just copy it)."
    )
    label_policy: Policy | None = Field(
        default=None,
        description="Offline labels: a frozen (base) policy that votes instead of the current one; labels are "
        "computed once per task and cached, and the attempt's own answer is not a vote.",
    )


class RubricOptions(_Options):
    threshold: float = Field(default=0.7, ge=-1, le=1, description="Success iff the rubric score reaches this.")
    grade_tokens: int = Field(default=16, ge=1, description="Max new tokens of one grading answer.")
    samples_per_item: int = Field(
        default=1, ge=1, le=16, description="Grades per item (majority of the parseable ones); >1 samples at temperature."
    )
    temperature: float = Field(default=0.7, ge=0, le=2, description="Grading temperature when samples_per_item > 1.")


class CritiqueOptions(_Options):
    pass


# ----- sources -----


@register_feedback_source("majority")
class MajorityFeedback:
    """SRT self-consistency: agree with the majority of your own samples (online filter on agreement)."""

    name: ClassVar[str]
    options_class: ClassVar[type[_Options]] = MajorityOptions

    def __init__(self, options: MajorityOptions | None = None) -> None:
        self.options = options or MajorityOptions()
        self._offline: dict[str, tuple[str, int, int] | None] = {}

    async def _votes(self, task: Task, policy: Policy, deps: GraphDeps) -> list[str]:
        o = self.options
        params = SamplingParams(
            max_tokens=deps.config.solve_tokens, temperature=o.temperature, top_p=deps.config.top_p, n=o.k
        )
        completions = await policy.generate([task.messages()], params)
        answers = (deps.environment.extract_answer(c.text) for c in completions)
        return [normalize_answer(a) for a in answers if a is not None]  # unparseable samples do not vote

    async def _label(self, task: Task, answer: str, deps: GraphDeps) -> tuple[str, int, int] | None:
        """(label, votes for it, votes cast), or None when no sample parsed (offline mode only)."""
        if self.options.label_policy is None:
            votes = [*await self._votes(task, deps.policy, deps), answer]  # own answer last: ties go to the samples
            label, agreement = majority_label(votes)
            return label, round(agreement * len(votes)), len(votes)
        if task.id not in self._offline:
            votes = await self._votes(task, self.options.label_policy, deps)
            if votes:
                label, agreement = majority_label(votes)
                self._offline[task.id] = (label, round(agreement * len(votes)), len(votes))
            else:
                self._offline[task.id] = None
        return self._offline[task.id]

    async def score(self, task: Task, output: str, deps: GraphDeps) -> tuple[Feedback, Feedback | None]:
        truth = ground_truth(deps.environment, task, output)
        raw = deps.environment.extract_answer(output)
        if raw is None:
            return Feedback.failure(deps.environment.missing_answer_message(output)), truth
        answer = normalize_answer(raw)
        found = await self._label(task, answer, deps)
        if found is None:
            msg = f"{UNRELIABLE} None of the reference samples gave a parseable answer, so there is no label."
            return Feedback.failure(msg, answer=raw, reliable=False), truth
        label, votes, cast = found
        share = votes / cast
        named = f" ({label!r})" if self.options.reveal_majority else ""
        if share < self.options.threshold:
            msg = (
                f"{UNRELIABLE} Your answers to this task disagree: the most common one{named} got only "
                f"{votes} of {cast} votes, so your answer could not be judged. Work the problem through carefully."
            )
            return Feedback.failure(msg, answer=raw, reliable=False, label=label), truth
        if answer == label:
            agree = f"Your answer agrees with most of your attempts ({votes} of {cast})."
            return Feedback.correct(raw, agree, label=label), truth
        msg = f"Your answer disagrees with most of your attempts ({votes} of {cast} gave another answer{named})."
        return Feedback.failure(msg, answer=raw, label=label), truth


@register_feedback_source("rubric")
class RubricFeedback:
    """Rubric self-grading: the policy marks each rubric item MET / NOT MET for its own response."""

    name: ClassVar[str]
    options_class: ClassVar[type[_Options]] = RubricOptions

    def __init__(self, options: RubricOptions | None = None) -> None:
        self.options = options or RubricOptions()

    @classmethod
    def check_environment(cls, environment: Environment) -> None:
        """Refuse an environment whose tasks carry no rubric (ValueError naming the fix)."""
        rubric_of(environment.sample(1, "train", seed=0)[0])

    async def score(self, task: Task, output: str, deps: GraphDeps) -> tuple[Feedback, Feedback | None]:
        items = rubric_of(task)
        truth = ground_truth(deps.environment, task, output)
        answer = deps.environment.extract_answer(output)
        if answer is None:
            return Feedback.failure(deps.environment.missing_answer_message(output)), truth
        o = self.options
        chats = [
            [{"role": "user", "content": RUBRIC_GRADE.format(question=task.question, response=answer, criterion=i["criterion"])}]
            for i in items
        ]
        sampled = o.samples_per_item > 1
        params = SamplingParams(
            max_tokens=o.grade_tokens, temperature=o.temperature if sampled else 0.0, n=o.samples_per_item
        )
        completions = await deps.policy.generate(chats, params)
        grades: list[bool] = []
        lines: list[str] = []
        for j, item in enumerate(items):
            parsed = [parse_grade(c.text) for c in completions[j * o.samples_per_item : (j + 1) * o.samples_per_item]]
            said = [g for g in parsed if g is not None]
            met = bool(said) and sum(said) * 2 > len(said)  # no verdict counts as NOT MET
            grades.append(met)
            tag = "MET" if met else ("NOT MET" if said else "NOT MET (no verdict)")
            lines.append(f"- [{tag}] ({item['points']:+g}) {item['criterion']}")
        reward = rubric_score(grades, items)
        success = reward >= o.threshold
        head = f"Self-graded rubric score {reward:.2f} ({'meets' if success else 'below'} the bar {o.threshold:.2f}):"
        return Feedback(reward=reward, success=success, message="\n".join([head, *lines]), answer=answer), truth


@register_feedback_source("critique")
class CritiqueFeedback:
    """The policy's own verdict on its answer as the reward (cheapest; the least trustworthy)."""

    name: ClassVar[str]
    options_class: ClassVar[type[_Options]] = CritiqueOptions

    def __init__(self, options: CritiqueOptions | None = None) -> None:
        self.options = options or CritiqueOptions()

    async def score(self, task: Task, output: str, deps: GraphDeps) -> tuple[Feedback, Feedback | None]:
        truth = ground_truth(deps.environment, task, output)
        answer = deps.environment.extract_answer(output)
        if answer is None:
            return Feedback.failure(deps.environment.missing_answer_message(output)), truth
        messages = [*task.messages(), {"role": "assistant", "content": output}, {"role": "user", "content": prompts.CRITIQUE}]
        [completion] = await deps.policy.generate([messages], deps.config.params("critique"))
        verdict = prompts.parse_verdict(completion.text)
        said = completion.text.strip()
        if verdict is None:
            return Feedback.failure(f"Your self-check gave no verdict: {said!r}", answer=answer), truth
        if verdict:
            return Feedback.correct(answer, f"You judged your answer correct: {said}"), truth
        return Feedback.failure(f"You judged your answer incorrect: {said}", answer=answer), truth


def rubric_of(task: Task) -> list[dict[str, Any]]:
    """``task.reference["rubric"]``, validated. A task without one is a user error (wrong source for the env)."""
    items = task.reference.get("rubric")
    if not items:
        raise ValueError(
            f"task {task.id} ({task.env}) has no reference['rubric']; the rubric feedback source needs an "
            "environment with rubrics (e.g. open_ended) — use --feedback majority or verifier for this one"
        )
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("criterion"), str) or "points" not in item:
            raise ValueError(f"task {task.id}: rubric item {item!r} needs 'criterion' (str) and 'points' (number)")
    return items
