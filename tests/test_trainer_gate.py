"""Gate statistics on known numbers: Wilson intervals, paired differences, margin and ties."""

from __future__ import annotations

import doctest

import pytest

import trainer.gate as G
from trainer.gate import TaskOutcome, evaluate_gate, paired_difference, wilson
from trainer.synthetic import make_episode, tasks


def test_doctests():
    assert doctest.testmod(G).failed == 0


def test_wilson_known_values():
    assert [round(x, 4) for x in wilson(8, 10)] == [0.4902, 0.9433]
    assert [round(x, 4) for x in wilson(0, 10)] == [0.0, 0.2775]
    assert [round(x, 4) for x in wilson(50, 100)] == [0.4038, 0.5962]


def test_paired_difference_properties():
    a, b, c, d = 12, 9, 2, 11
    cand = [True] * (a + b) + [False] * (c + d)
    curr = [True] * a + [False] * b + [True] * c + [False] * d
    diff, lo, hi = paired_difference(cand, curr)
    assert diff == pytest.approx(7 / 34)
    assert 0 < lo < diff < hi < 1  # significant: 9 vs 2 discordant pairs
    assert round(lo, 3) == 0.016 and round(hi, 3) == 0.372
    # identical results: zero difference, interval around it
    diff, lo, hi = paired_difference(cand, cand)
    assert diff == 0 and lo < 0 < hi


def _outcomes(firsts, finals):
    return {f"t{i}": TaskOutcome(f, g) for i, (f, g) in enumerate(zip(firsts, finals, strict=True))}


def test_decision_margin_and_ties():
    curr = _outcomes([False] * 10, [True] * 5 + [False] * 5)
    better = _outcomes([False] * 10, [True] * 7 + [False] * 3)
    same = _outcomes([True] * 10, [True] * 5 + [False] * 5)  # better first try, tie on final
    d = evaluate_gate(better, curr, "v1", "base")
    assert d.promote and d.final.diff == pytest.approx(0.2) and d.final.candidate_only == 2
    assert "v1 beats base" in d.reason
    tie = evaluate_gate(same, curr)
    assert not tie.promote and tie.first.diff == 1.0  # primary is final: a tie keeps the current model
    assert evaluate_gate(same, curr, primary="first").promote
    assert not evaluate_gate(better, curr, margin=0.25).promote
    assert evaluate_gate(better, curr, margin=0.2).promote
    assert not evaluate_gate(better, curr, require_significant=True).promote  # 2 discordant pairs of 10
    lo, hi = d.final.candidate_ci
    assert lo < 0.7 < hi


def test_unpaired_tasks_raise_or_are_dropped():
    curr = _outcomes([True, False], [True, False])
    cand = {"t0": TaskOutcome(True, True), "other": TaskOutcome(True, True)}
    with pytest.raises(ValueError, match="same held-out task list"):
        evaluate_gate(cand, curr)
    d = evaluate_gate(cand, curr, drop_unpaired=True)
    assert d.n_tasks == 1 and "2 unpaired" in d.reason
    with pytest.raises(ValueError, match="margin"):
        evaluate_gate(curr, curr, margin=-0.1)


def test_outcomes_from_episodes():
    t = tasks(2)
    eps = [make_episode(t[0], first_success=True), make_episode(t[1], retry_success=True)]
    out = G.outcomes_from_episodes(eps)
    assert out[t[0].id] == TaskOutcome(True, True) and out[t[1].id] == TaskOutcome(False, True)
