"""Feedback sources for tasks without a (complete) verifier: the policy rewards itself.

``registry`` holds the decorator, the ``selfevolve.feedback_sources`` entry points and
:func:`make_feedback_source`; ``sources`` the built-ins (``majority``, ``rubric``, ``critique``), which
register on import. See docs/self_reward.md.

    selfevolve run --env open_ended --feedback rubric
    selfevolve run --env arithmetic --feedback majority:k=8,threshold=0.6
"""

from agent.feedback.registry import (
    ENTRY_POINT_GROUP,
    VERIFIER,
    NoOptions,
    list_feedback_sources,
    make_feedback_source,
    register_feedback_source,
    reload_entry_points,
)
from agent.feedback.sources import (
    UNRELIABLE,
    CritiqueFeedback,
    CritiqueOptions,
    MajorityFeedback,
    MajorityOptions,
    RubricFeedback,
    RubricOptions,
    ground_truth,
    is_unreliable,
    majority_label,
    parse_grade,
    rubric_of,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "UNRELIABLE",
    "VERIFIER",
    "CritiqueFeedback",
    "CritiqueOptions",
    "MajorityFeedback",
    "MajorityOptions",
    "NoOptions",
    "RubricFeedback",
    "RubricOptions",
    "ground_truth",
    "is_unreliable",
    "list_feedback_sources",
    "majority_label",
    "make_feedback_source",
    "parse_grade",
    "register_feedback_source",
    "reload_entry_points",
    "rubric_of",
]
