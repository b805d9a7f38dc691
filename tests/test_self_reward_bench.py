"""Fast tests of bench/experiments/self_reward's pure parts: gap metrics, collapse detection, tables, plot (no model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.feedback import UNRELIABLE
from bench.experiments.self_reward import experiment, metrics, report, settings
from environments import Feedback, Task
from memory.records import Attempt, Episode, ModelCall
from trainer.gate import wilson


def _task() -> Task:
    return Task(id="t1", env="arithmetic", split="train", question="2+2?",
                prompt=[{"role": "user", "content": "2+2?"}], reference={"answer": "4"})


def _attempt(self_ok: bool, truth_ok: bool | None, unreliable: bool = False) -> Attempt:
    call = ModelCall(node="solve", messages=[{"role": "user", "content": "2+2?"}], output="4")
    msg = (UNRELIABLE + " votes split") if unreliable else "ok"
    fb = Feedback(reward=1.0 if self_ok else 0.0, success=self_ok, message=msg)
    gt = None if truth_ok is None else Feedback(reward=float(truth_ok), success=truth_ok, message="truth")
    return Attempt(index=0, solve=call, answer="4", feedback=fb, ground_truth=gt)


def _episode(*attempts: Attempt) -> Episode:
    return Episode(task=_task(), env="arithmetic", model_version="base", attempts=list(attempts))


def test_gap_metrics_from_synthetic_episodes():
    eps = [
        _episode(_attempt(True, True)),    # true positive
        _episode(_attempt(True, False)),   # false positive
        _episode(_attempt(True, False)),   # false positive
        _episode(_attempt(False, False, unreliable=True)),  # true negative, filtered
        _episode(_attempt(False, True)),   # false negative
        _episode(_attempt(True, None)),    # no truth: skipped
    ]
    m = metrics.gap_metrics(metrics.judged_pairs(eps, "majority"))
    assert m["n"] == 5
    assert (m["self"]["k"], m["truth"]["k"], m["agreement"]["k"]) == (3, 2, 2)
    assert (m["fpr"]["k"], m["fpr"]["n"]) == (2, 3)
    assert (m["fnr"]["k"], m["fnr"]["n"]) == (1, 2)
    assert m["unreliable"] == 1
    assert m["mean_self_reward"] == pytest.approx(3 / 5)
    assert m["self"]["lo"] < m["self"]["p"] < m["self"]["hi"]


def test_verifier_feedback_is_its_own_truth():
    eps = [_episode(_attempt(True, None)), _episode(_attempt(False, None))]
    m = metrics.gap_metrics(metrics.judged_pairs(eps, "verifier"))
    assert m["n"] == 2 and m["agreement"]["p"] == 1.0 and m["fpr"]["k"] == 0


def test_empty_metrics_and_wilson():
    m = metrics.gap_metrics([])
    assert m["n"] == 0 and m["self"]["p"] is None and m["mean_self_reward"] is None
    assert wilson(0, 0) == (0.0, 1.0)
    lo, hi = wilson(8, 16)
    assert lo == pytest.approx(0.28, abs=0.01) and hi == pytest.approx(0.72, abs=0.01)


def test_collapse_points():
    vs = [{"pseudo": 0.4, "heldout": 0.5}, {"pseudo": 0.5, "heldout": 0.6},
          {"pseudo": 0.8, "heldout": 0.2}, {"pseudo": None, "heldout": 0.1}]
    assert metrics.collapse_points(vs) == [2]
    assert metrics.collapse_points([{"pseudo": 0.4, "heldout": 0.5}]) == []


def _rate(k, n):
    return metrics._rate(k, n)


def _results() -> dict:
    gap = metrics.gap_metrics([(True, True, 1.0, False), (True, False, 1.0, False), (False, False, 0.0, True)])

    def rnd(r, pseudo, truth, acc_k):
        return {"round": r, "version": f"v000{r}-sft",
                "collect": {"episodes": 4, "seconds": 3.0, "tokens": 100, "mean_self_reward": pseudo,
                            "self_success": pseudo, "true_success": truth, "unreliable": 0},
                "train": {"seconds": 5.0, "steps": 2, "rows": 3},
                "eval": {**{k: v for k, v in _rate(acc_k, 4).items() if k != "p"}, "acc": acc_k / 4, "seconds": 2.0}}

    base = {**{k: v for k, v in _rate(2, 4).items() if k != "p"}, "acc": 0.5, "seconds": 2.0}
    return {
        "settings": {"model": "default", "episodes": 4, "rounds": 2, "steps": 2, "eval_n": 4, "max_tokens": 48,
                     "method": "sft", "quick": False, "command": "python -m bench.experiments.self_reward --episodes 4",
                     "results_path": "/tmp/x/results.json"},
        "gap": [{"source": "verifier", "env": "arithmetic", "seconds": 1.0, "metrics": gap},
                {"source": "majority", "env": "arithmetic", "seconds": 2.0, "metrics": gap}],
        "base_eval": base,
        "train": {"verifier": {"rounds": [rnd(1, 0.5, 0.5, 2), rnd(2, 0.5, 0.5, 3)]},
                  "majority": {"rounds": [rnd(1, 0.4, 0.5, 2), rnd(2, 0.7, 0.4, 1)]}},
        "wall_seconds": 60.0,
    }


def test_version_series_aligns_pseudo_with_the_collecting_version():
    vs = metrics.version_series(_results(), "majority")
    assert [v["version"] for v in vs] == ["base", "v0001-sft", "v0002-sft"]
    assert [v["pseudo"] for v in vs] == [0.4, 0.7, None]
    assert [v["heldout"] for v in vs] == [0.5, 0.5, 0.25]
    assert metrics.collapse_points(vs) == []  # pseudo rose at v1 but held-out did not fall until v2


def test_tables_doc_and_plot_render(tmp_path: Path):
    res = _results()
    gap = report.gap_table(res)
    assert "| majority | `arithmetic` | 3 |" in gap and "[1/2]" in gap
    tt = report.train_table(res)
    assert "| (both) | 0 | `base` |" in tt and "| majority | 2 | `v0002-sft` |" in tt
    plot = report.write_plot(res, tmp_path / "img")
    assert plot.name == "self_reward_training.png" and plot.stat().st_size > 1000
    doc = report.render_doc(res, res["settings"]["command"], plot, machine="test", when="now")
    assert "## (a) Generation–verification gap" in doc and "img/self_reward_training.png" in doc
    assert "python -m bench.experiments.self_reward --episodes 4" in doc and "1.0 min wall" in doc
    assert "**majority** training" in doc and "no collapse signature" in doc


def test_parse_args_presets(tmp_path: Path):
    a = experiment.parse_args(["--quick", "--workspace", str(tmp_path)])
    assert (a.episodes, a.rounds, a.steps, a.eval_n) == (settings.QUICK["episodes"], 1, 1, settings.QUICK["eval_n"])
    b = experiment.parse_args(["--episodes", "16", "--steps", "2"])
    assert (b.episodes, b.steps, b.rounds, b.method) == (16, 2, settings.FULL["rounds"], "sft")


def test_collapse_detail_reports_the_paired_drop():
    vs = [{"version": "base", "pseudo": 0.2, "heldout": 0.75, "outcomes": [1, 1, 1, 0]},
          {"version": "v1", "pseudo": 0.5, "heldout": 0.25, "outcomes": [1, 0, 0, 0]}]
    assert metrics.collapse_points(vs) == [1]
    text = report._collapse_detail(vs, 1)
    assert "2 task(s) lost, 0 gained" in text and "p = 0.25" in text and "within noise" in text
