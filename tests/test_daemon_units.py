"""Pure functions of the daemon: curriculum (HS-STaR), monitors (B-STaR), tripwires (SRT), control files."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from agent.daemon import control, curriculum, monitors, tripwires


def ep(env, difficulty, ok, split="train"):
    return SimpleNamespace(env=env, first_success=ok, task=SimpleNamespace(split=split, difficulty=difficulty))


# ----- curriculum -----
def test_level_stats_counts_train_only():
    stats = curriculum.level_stats([ep("a", 2, True), ep("a", 2, False), ep("a", 3, True), ep("a", 2, True, "eval")])
    assert stats[("a", 2.0)] == curriculum.LevelStats(1, 2) and stats[("a", 3.0)].n == 1


def test_boundary_levels_outweigh_solved_and_unsolved():
    kw = dict(min_samples=4, explore_weight=0.25, floor=0.02)
    boundary = curriculum.level_weight(5, 10, **kw)
    assert boundary == pytest.approx(0.25)
    assert curriculum.level_weight(10, 10, **kw) == 0.02 == curriculum.level_weight(0, 10, **kw)
    assert curriculum.level_weight(1, 2, **kw) == 0.25  # unexplored


def test_plan_concentrates_on_the_boundary_env():
    stats = {("easy", 1.0): curriculum.LevelStats(20, 20), ("mid", 2.0): curriculum.LevelStats(10, 20),
             ("hard", 3.0): curriculum.LevelStats(0, 20)}
    counts, levels = curriculum.plan(["easy", "mid", "hard"], [1, 1, 1], stats, 30)
    assert sum(counts.values()) == 30
    assert counts["mid"] > 20 and counts["easy"] >= 1 and counts["hard"] >= 1
    assert levels["mid"][2.0] == pytest.approx(0.25)


def test_unexplored_env_gets_explored():
    stats = {("known", 1.0): curriculum.LevelStats(20, 20)}
    counts, _ = curriculum.plan(["known", "new"], [1, 1], stats, 10)
    assert counts["new"] > counts["known"]


def test_allocate_is_exact_and_weighted():
    assert curriculum.allocate(7, {"a": 1, "b": 1, "c": 1}) == {"a": 3, "b": 2, "c": 2}
    assert curriculum.allocate(0, {"a": 1}) == {"a": 0}


def test_pick_tasks_prefers_heavy_levels():
    tasks = [SimpleNamespace(difficulty=d, i=i) for i, d in enumerate([1.0] * 50 + [2.0] * 50)]
    picked = curriculum.pick_tasks(tasks, 20, {1.0: 0.01, 2.0: 0.25}, 0.25, random.Random(0))
    assert len(picked) == 20 and len({t.i for t in picked}) == 20
    assert sum(t.difficulty == 2.0 for t in picked) >= 17


# ----- monitors -----
def test_balance_score_and_pass_at_k():
    assert monitors.balance_score(1, 4, 2) == pytest.approx(0.5 * 0.25)
    assert monitors.balance_score(3, 4, 2) == pytest.approx(0.75)
    assert monitors.pass_at_k([[True, False], [False, False], [False, True]]) == pytest.approx(2 / 3)


def test_summarize_probe():
    s = monitors.summarize_probe([(["1", "1", "2", "3"], [True, True, False, False]),
                                  (["x", "y", "z", "w"], [True, True, True, False])], target=2)
    assert s["pass@4"] == 1.0 and s["distinct_correct"] == 2.0
    assert s["balance_score"] == pytest.approx((0.5 * 0.25 + 1.0 * 0.75) / 2)
    assert monitors.summarize_probe([], 2) == {"probe_tasks": 0}


def test_critique_agreement_uses_ground_truth_when_present():
    def att(verdict, ok, truth=None):
        return SimpleNamespace(critique_verdict=verdict, feedback=SimpleNamespace(success=ok),
                               ground_truth=None if truth is None else SimpleNamespace(success=truth))

    eps = [SimpleNamespace(attempts=[att(True, True), att(False, True), att(None, False), att(True, True, truth=False)])]
    assert monitors.critique_agreement(eps) == pytest.approx(1 / 3)
    assert monitors.critique_agreement([]) is None


# ----- tripwires -----
def test_planted_collapse_series_trips():
    """SRT-style: pseudo-reward climbs, held-out accuracy climbs then collapses."""
    rewards = [0.30, 0.35, 0.42, 0.55, 0.78, 0.95]
    accuracy = [0.30, 0.34, 0.38, 0.36, 0.20, 0.05]
    trips = [tripwires.reward_accuracy_divergence(rewards[:i], accuracy[:i], window=3) for i in range(1, 7)]
    assert trips[:4] == [None] * 4  # healthy while both rise (and a small dip is tolerated)
    assert trips[4] is not None and "collapse" in trips[4]


def test_no_trip_on_healthy_or_short_series():
    assert tripwires.reward_accuracy_divergence([0.1, 0.2, 0.3], [0.2, 0.3, 0.4]) is None
    assert tripwires.reward_accuracy_divergence([0.1, 0.9], [0.9, 0.1], window=3) is None
    assert tripwires.reward_accuracy_divergence([None, 0.2, 0.9, None], [0.5, 0.5, 0.1, 0.2], window=3) is None


def test_kl_jump():
    assert tripwires.kl_jump([0.01, 0.02, 0.015, 0.3]) is not None
    assert tripwires.kl_jump([0.01, 0.02, 0.015, 0.03]) is None
    assert tripwires.kl_jump([0.001, 0.002, 0.03], minimum=0.05) is None
    history = [{"train_reward": r, "heldout_accuracy": a, "kl": None} for r, a in [(0.2, 0.5), (0.5, 0.4), (0.9, 0.1)]]
    assert tripwires.check(history, window=3, min_reward_rise=0.05, min_accuracy_drop=0.05, kl_factor=5, kl_min=0.05)


# ----- control files -----
def test_lock_is_exclusive_and_released(tmp_path):
    with control.WorkspaceLock(tmp_path):
        assert control.lock_held(tmp_path)
        with pytest.raises(control.DaemonAlreadyRunning, match="selfevolve stop"):
            control.WorkspaceLock(tmp_path).acquire()
    assert not control.lock_held(tmp_path)
    control.WorkspaceLock(tmp_path).acquire().release()


def test_atomic_state_and_stop_request(tmp_path):
    control.write_json_atomic(control.state_path(tmp_path), {"a": 1})
    assert control.read_state(tmp_path) == {"a": 1}
    assert not list(control.control_dir(tmp_path).glob("*.tmp"))
    done = control.request_stop(tmp_path, "because")
    assert done == {"running": False, "pid": None, "signalled": False}
    assert control.stop_requested(tmp_path) == "because"
    control.clear_stop(tmp_path)
    assert control.stop_requested(tmp_path) is None
