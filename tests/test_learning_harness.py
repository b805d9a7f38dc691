"""bench/experiments/learning: the pure parts (results file, resume, table, verdict text, plots) on synthetic numbers.

The model-running path is one opt-in test: ``pytest -m slow tests/test_learning_harness.py``.
"""

from __future__ import annotations

import json

import pytest

from bench.experiments import common
from bench.experiments.learning import experiment, report
from bench.experiments.learning import results as R

ENVS = ["arithmetic:answer_format=strict", "countdown"]


def ev(first: list[int], final: list[int] | None = None, seconds: float = 1.0) -> dict:
    from trainer.gate import wilson

    final = final if final is not None else first
    return {"first_try_accuracy": sum(first) / len(first), "first_try_ci95": list(wilson(sum(first), len(first))),
            "final_accuracy": sum(final) / len(final), "final_ci95": list(wilson(sum(final), len(final))),
            "seconds": seconds, "tokens": 10, "first": first, "final": final}


def settings(**kw) -> dict:
    return {"model": "default", "envs": ENVS, "methods": list(R.METHODS), "rounds": 2, "episodes_per_round": 8,
            "train_env": "arithmetic", "steps_per_round": 1, "eval_n": 10, "max_tokens": 48, "budget_minutes": 10.0, "quick": True, **kw}


def rec(r: int, version: str, target: list[int], other: list[int], steps: int = 1) -> dict:
    return {"round": r, "version": version,
            "collect": {"episodes": 8, "seconds": 60.0, "tokens": 1000, "first_try_accuracy": 0.1, "final_accuracy": 0.2},
            "train": {"steps": steps, "seconds": 30.0 * steps}, "evals": {ENVS[0]: ev(target), ENVS[1]: ev(other)}}


BASE_T = [0] * 8 + [1] * 2  # 20%
BASE_O = [1] * 5 + [0] * 5  # 50%


@pytest.fixture
def results() -> dict:
    res = R.new_results(settings())
    res["base"] = {ENVS[0]: ev(BASE_T), ENVS[1]: ev(BASE_O)}
    # grpo-reflection: clearly better on the target (all 8 failures fixed), same on the other env
    R.add_round(res, "grpo-reflection", rec(1, "v0001-grpo-reflection", [1] * 6 + [0] * 2 + [1] * 2, BASE_O))
    R.add_round(res, "grpo-reflection", rec(2, "v0002-grpo-reflection", [1] * 10, BASE_O))
    # sft: no change on the target, drops hard on the other env
    R.add_round(res, "sft", rec(1, "v0001-sft", BASE_T, [0] * 10))
    # memory: one extra task, not significant; no training steps
    R.add_round(res, "memory", rec(1, "memory-r1", [1] + [0] * 7 + [1] * 2, BASE_O, steps=0))
    return res


def test_cumulative_compute_adds_up(results):
    rounds = results["methods"]["grpo-reflection"]["rounds"]
    assert [r["cumulative"]["seconds"] for r in rounds] == [90.0, 180.0]
    assert [r["cumulative"]["tokens"] for r in rounds] == [1000, 2000]
    assert [r["cumulative"]["steps"] for r in rounds] == [1, 2]
    assert R.totals(results, "memory")["steps"] == 0
    assert R.totals(results, "grpo")["seconds"] == 0


def test_resume_skips_done_rounds_and_refuses_other_settings(results, tmp_path):
    path = tmp_path / "results.json"
    common.save_results(path, results)
    assert not path.with_suffix(".json.tmp").exists()
    again = R.load_results(path, settings(rounds=5), resume=True)  # more rounds: allowed
    assert again["settings"]["rounds"] == 5
    assert R.round_done(again, "grpo-reflection", 1) and R.round_done(again, "grpo-reflection", 2)
    assert not R.round_done(again, "grpo-reflection", 3) and not R.round_done(again, "grpo", 1)
    assert R.load_results(path, settings(), resume=False)["methods"] == {}
    with pytest.raises(SystemExit, match="eval_n"):
        R.load_results(path, settings(eval_n=64), resume=True)


def test_redoing_a_round_replaces_it(results):
    R.add_round(results, "sft", rec(1, "v0002-sft", BASE_T, BASE_O))
    rounds = results["methods"]["sft"]["rounds"]
    assert [r["version"] for r in rounds] == ["v0002-sft"]


def test_series_starts_at_the_shared_base(results):
    pts = R.series(results, "grpo-reflection", ENVS[0])
    assert [p["version"] for p in pts] == ["base", "v0001-grpo-reflection", "v0002-grpo-reflection"]
    assert pts[0]["minutes"] == 0 and pts[-1]["minutes"] == 3.0
    assert pts[0]["lo"] <= pts[0]["acc"] <= pts[0]["hi"]


def test_mcnemar():
    assert common.mcnemar_p([1] * 8, [0] * 8)[2] == pytest.approx(1 / 256)
    assert common.mcnemar_p([1, 0], [0, 1]) == (1, 1, 0.75)
    assert common.mcnemar_p([0, 0], [0, 0])[2] == 1.0


def test_verdict_text_from_numbers(results):
    v = {(x["method"], x["env"]): x for x in report.verdicts(results)}
    assert v[("grpo-reflection", ENVS[0])]["improved"]
    assert not v[("memory", ENVS[0])]["improved"] and not v[("memory", ENVS[0])]["dropped"]
    assert v[("sft", ENVS[1])]["dropped"]
    text = report.did_not_improve_text(results)
    assert "**grpo-reflection** on `arithmetic:answer_format=strict`: base 20.0% → last version `v0002-grpo-reflection` 100.0%" in text
    assert "improved." in text
    assert "**sft** on `arithmetic:answer_format=strict`" in text and "did not beat the base" in text
    assert "under 1.5B" not in text and "for: sft" in text  # memory is not a weight-update method
    assert "Forgetting: sft on `countdown`" in text
    R.add_round(results, "grpo", {**rec(1, "base", BASE_T, BASE_O, steps=0),
                                  "train": {"steps": 0, "seconds": 1.0, "skipped": "no episode with a failed first attempt"}})
    assert "grpo round 1: training was skipped, the version did not change — no episode" in report.did_not_improve_text(results)


def test_verdict_text_when_nothing_trained():
    res = R.new_results(settings())
    res["base"] = {ENVS[0]: ev(BASE_T)}
    assert "No method" in report.did_not_improve_text(res)


def test_table_has_a_row_per_version_and_env(results):
    t = report.table(results)
    assert t.count("\n") == 2 + 2 * 5  # header + (base + 4 versions) per env
    assert "| (all) | `base` | `arithmetic:answer_format=strict` | 20.0% (6%–51%)" in t
    assert "| grpo-reflection | `v0002-grpo-reflection` | `countdown` | 50.0%" in t


def test_plots_and_doc(results, tmp_path):
    paths = report.write_plots(results, tmp_path / "img")
    assert [p.name for p in paths] == ["learning_arithmetic_answer_format_strict.png", "learning_countdown.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    doc = report.render_doc(results, "python -m bench.experiments.learning --quick", paths, smoke=True, estimate="x")
    assert "SMOKE RUN" in doc and "## What did not improve" in doc and "## Recipe for a larger model" in doc
    assert "![learning_countdown](img/learning_countdown.png)" in doc
    assert "5e-7" in doc and "0.001" in doc
    assert "## Findings" not in doc
    noted = report.render_doc(results, "cmd", paths, notes="R3 got no reward.\n")
    assert "## Findings\n\nR3 got no reward." in noted and noted.index("## Findings") < noted.index("## Results")


def test_cost_estimate_extrapolates_quick_runs(results):
    text = report.cost_estimate(results, 600.0)
    assert "Whole run: 10.0 min wall" in text and "CPU-hours" in text
    results["settings"]["quick"] = False
    assert "CPU-hours" not in report.cost_estimate(results, None)


def test_cli_presets_and_errors():
    quick = experiment.parse_args(["--quick"])
    assert (quick.episodes_per_round, quick.steps_per_round, quick.eval_n, quick.max_tokens) == (8, 1, 8, 48)
    full = experiment.parse_args(["--rounds", "2", "--methods", "sft,memory"])
    assert full.rounds == 2 and full.eval_n == R.FULL["eval_n"] and full.methods == ["sft", "memory"]
    with pytest.raises(SystemExit):
        experiment.parse_args(["--methods", "ppo"])


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path):
    """The real embedded model, one method, tiny numbers: results file, doc and plots come out; resume skips."""
    ws, doc = tmp_path / "ws", tmp_path / "docs" / "learning.md"
    argv = ["--quick", "--methods", "grpo-reflection", "--envs", "arithmetic", "--eval-n", "4",
            "--episodes-per-round", "4", "--workspace", str(ws), "--doc", str(doc)]
    experiment.main(argv)
    res = json.loads((ws / "results.json").read_text())
    [r] = res["methods"]["grpo-reflection"]["rounds"]
    assert r["evals"]["arithmetic"]["n"] == 4 and r["cumulative"]["seconds"] > 0
    assert "SMOKE RUN" in doc.read_text() and (doc.parent / "img" / "learning_arithmetic.png").exists()
    before = (ws / "results.json").read_text()
    experiment.main([*argv, "--resume"])  # nothing left to do
    assert json.loads((ws / "results.json").read_text())["methods"] == json.loads(before)["methods"]


def test_table_reports_recovery_by_retry(results):
    results["base"][ENVS[0]]["final"] = [1, 1] + [0] * 6 + [1, 1]  # 2 of the 8 first-try failures recovered
    assert "| 2/8 = 25.0% (" in report.table(results)


def test_a_zero_reward_run_is_called_untested_not_a_finding(results):
    """The R3 run that trained on an all-zero reward must not read as evidence about R3."""
    for r in results["methods"]["grpo-reflection"]["rounds"]:
        r["train"]["metrics"] = {"train/reward_mean": 0.0}
    for r in results["methods"]["sft"]["rounds"]:
        r["train"]["metrics"] = {"train/reward_mean": 0.3, "train/dynamic/zero_variance_share_mean": 0.6}
    assert report.zero_signal_methods(results) == ["grpo-reflection"]
    text = report.did_not_improve_text(results)
    assert "grpo-reflection: every training step's reward was the same" in text and "did not test it" in text
    assert "| sft | 1 | `v0001-sft` | 1 | 0.300 | 0.600 | – | – |" in report.signal_table(results)
