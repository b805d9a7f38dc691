"""Collection on Ray (agent/scale) on a real local Ray cluster (127.0.0.1, 2 CPUs, started here):
every episode recorded once by the driver, a worker killed mid-episode retried (never duplicated or
lost), retries exhausted reported, hints retrieved by the driver, and ``selfevolve run --ray``.

Scripted policies (tests/ray_scripted.py, tests/daemon_scripted.py) stand in for the model; the cluster,
the actors, their deaths and the library are real. One cluster for the module (starting it takes ~10 s).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.graph import EpisodeConfig, GraphDeps
from agent.runner import run_episodes
from environments import get_environment
from memory.library import ExperienceLibrary
from tests.daemon_scripted import DaemonScriptedPolicy, HashEmbedder

ray = pytest.importorskip("ray")

from agent.scale.driver import RayDriver, collect_on_ray, plan_jobs  # noqa: E402
from agent.scale.jobs import EpisodeResult, WorkerSpec  # noqa: E402
from agent.scale.pool import WorkerPool, WorkerStartError  # noqa: E402

SCRIPTED = "python:tests.daemon_scripted:policy"
FAULTY = "python:tests.ray_scripted:faulty"
ENV = get_environment("arithmetic")
SAME_FIELDS = ("episodes", "first_try_accuracy", "final_accuracy", "recovered_by_retry", "mean_attempts", "retried",
               "retrieval_hits", "critique_agreement", "tokens", "completion_tokens", "errors")


@pytest.fixture(scope="module")
def cluster():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture
def scripted_pool(cluster):
    """Two workers of the daemon's scripted solver, two episodes each at a time. One pool per test: each
    worker holds one of the cluster's 2 CPUs, so a pool must be gone before the next one can start."""
    with WorkerPool(WorkerSpec(SCRIPTED, concurrency=2), workers=2) as pool:
        yield pool


@pytest.fixture
def lib(tmp_path):
    with ExperienceLibrary(tmp_path / "ws", embedder=HashEmbedder()) as library:
        yield library


def rows_per_task(workspace: Path) -> dict[str, int]:
    """Episode rows per task id, straight from SQLite (the truth, not the library's API)."""
    with sqlite3.connect(workspace / "experience.db") as conn:
        return dict(conn.execute("SELECT task_id, COUNT(*) FROM episodes GROUP BY task_id").fetchall())


def distinct_tasks(n: int, seed: int):
    """``n`` different tasks (a fault planted on one task's question must hit one slot only)."""
    unique = {t.id: t for t in ENV.sample(3 * n, "train", seed=seed)}
    assert len(unique) >= n
    return list(unique.values())[:n]


def once_each(tasks) -> dict[str, int]:
    """One row per planned task (a sample may hold a task twice: then two episodes, two rows)."""
    return dict(Counter(t.id for t in tasks))


async def test_episodes_recorded_once_each_with_the_in_process_summary(scripted_pool, lib, tmp_path):
    tasks = ENV.sample(8, "train", seed=3)
    config = EpisodeConfig(retrieval=False)
    pool = scripted_pool
    episodes, summary = await collect_on_ray(pool, [(ENV, tasks)], config, library=lib, run_id="r1", seed=5)
    with ExperienceLibrary(tmp_path / "local", embedder=HashEmbedder()) as local:
        _, ref = await run_episodes(tasks, GraphDeps(DaemonScriptedPolicy(), ENV, config, local), run_id="r1", seed=5)
    assert {f: getattr(summary, f) for f in SAME_FIELDS} == {f: getattr(ref, f) for f in SAME_FIELDS}
    assert summary.retried > 0 and summary.recovered_by_retry > 0  # retries ran inside the workers
    assert [e.task.id for e in episodes] == [t.id for t in tasks]  # task order, as in-process
    assert rows_per_task(lib.workspace) == once_each(tasks)
    assert lib.count(run_id="r1") == 8 and sorted(summary.episode_ids) == sorted(e.id for e in lib.episodes())
    assert pool.stats.restarts == pool.stats.duplicates == 0


async def test_driver_retrieves_hints_and_workers_show_them(scripted_pool, lib):
    config = EpisodeConfig(retrieval=True, k=2, min_hint_score=-1.0)
    first, later = ENV.sample(4, "train", seed=11), ENV.sample(4, "train", seed=12)
    await collect_on_ray(scripted_pool, [(ENV, first)], config.model_copy(update={"retrieval": False}), library=lib)
    episodes, summary = await collect_on_ray(scripted_pool, [(ENV, later)], config, library=lib)
    assert summary.retrieval_hits == 4
    for ep in episodes:
        shown = [lib.get(i) for i in ep.retrieved_ids]
        assert shown and all(s.success and s.task.id != ep.task.id for s in shown)
        prompt = ep.attempts[0].solve.messages[-1]["content"]
        assert all(s.task.question in prompt for s in shown)  # the hint reached the worker's solve prompt


async def test_worker_killed_mid_episode_is_retried_never_duplicated_or_lost(cluster, lib, tmp_path):
    tasks = distinct_tasks(6, seed=21)
    marker = tmp_path / "marker"
    marker.mkdir()
    spec = WorkerSpec(FAULTY, options={"marker_dir": str(marker), "block": tasks[0].question})
    with WorkerPool(spec, workers=2) as pool:
        run = asyncio.ensure_future(collect_on_ray(pool, [(ENV, tasks)], EpisodeConfig(retrieval=False), library=lib,
                                                   run_id="kill"))
        deadline = time.monotonic() + 30
        while not (marker / "started").exists():
            assert time.monotonic() < deadline and not run.done(), "the blocked episode never started"
            await asyncio.sleep(0.05)
        assert tasks[0].id not in rows_per_task(lib.workspace)  # mid-episode: not recorded yet
        ray.kill(ray.get_actor((marker / "started").read_text()))
        episodes, summary = await asyncio.wait_for(run, 60)
    assert summary.errors == [] and summary.episodes == 6
    assert pool.stats.restarts == 1 and pool.stats.resubmitted == 1
    assert rows_per_task(lib.workspace) == once_each(tasks)  # exactly once each, none lost
    killed = next(e for e in episodes if e.task.id == tasks[0].id)
    assert lib.get(killed.id).task.id == tasks[0].id


async def test_retries_exhausted_is_an_error_and_nothing_is_recorded_for_it(cluster, lib):
    tasks = distinct_tasks(4, seed=31)
    spec = WorkerSpec(FAULTY, options={"die_on": tasks[1].question})
    with WorkerPool(spec, workers=2) as pool:
        _, summary = await collect_on_ray(pool, [(ENV, tasks)], EpisodeConfig(retrieval=False), library=lib,
                                          max_retries=1)
    [error] = summary.errors
    assert error.task_id == tasks[1].id and "died 2 times (max_retries=1)" in error.error
    assert pool.stats.exhausted == 1 and pool.stats.restarts == 2
    assert rows_per_task(lib.workspace) == once_each(t for t in tasks if t.id != tasks[1].id)
    assert summary.episodes == 3


async def test_a_result_that_arrives_twice_is_recorded_once(cluster, lib):
    [job] = plan_jobs([(ENV, ENV.sample(1, "train", seed=41))], EpisodeConfig(retrieval=False))
    from agent.scale.worker import EpisodeWorker

    result = await EpisodeWorker(WorkerSpec(SCRIPTED)).run(job)  # the worker, in-process: records nothing
    assert result.error is None and lib.count() == 0
    pool = WorkerPool(WorkerSpec(SCRIPTED), workers=1)  # never started: the driver only counts on it
    seen = []
    driver = RayDriver(pool, EpisodeConfig(retrieval=False), library=lib, on_episode=lambda ep, err: seen.append(ep))
    driver.results = [None]
    from agent.scale.driver import _Slot

    slot = _Slot(0, job, job.task["id"])
    await driver._accept(slot, result)
    await driver._accept(slot, EpisodeResult(**{**result.__dict__, "worker": "a second copy"}))
    assert lib.count() == 1 and pool.stats.duplicates == 1 and driver.errors == []
    assert [e.id for e in seen] == [job.episode_id] and len(driver.recorded) == 1  # counted once in the summary too


def test_a_worker_that_cannot_load_its_model_fails_the_start_in_one_line(cluster):
    with pytest.raises(WorkerStartError, match=r"could not load model python:tests\.nope:policy: ValueError"):
        WorkerPool(WorkerSpec("python:tests.nope:policy"), workers=1).start()


def test_cli_run_ray_local_records_each_episode_once(cluster, tmp_path, monkeypatch):
    from agent.cli import app

    monkeypatch.setattr("memory.library.default_embedder", HashEmbedder)
    ws = tmp_path / "ws"
    result = CliRunner().invoke(app, ["run", "--env", "arithmetic", "-n", "6", "--model", SCRIPTED, "--seed", "4",
                                      "--ray", "local", "--ray-workers", "1", "--workspace", str(ws), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout[result.stdout.index("{"):])
    assert out["episodes"] == 6 and out["errors"] == [] and out["ray"]["workers"] == 1
    assert sum(rows_per_task(ws).values()) == 6 and len(rows_per_task(ws)) == 6
    with ExperienceLibrary(ws, embedder=HashEmbedder()) as lib:
        assert lib.get_run(out["run_id"]).summary["ray"]["restarts"] == 0
        assert lib.count(run_id=out["run_id"]) == 6


def test_daemon_collects_on_ray_and_records_each_episode_once(cluster, tmp_path):
    from agent.daemon import control
    from agent.daemon.config import parse_config
    from agent.daemon.loop import Daemon

    cfg = parse_config({
        "model": SCRIPTED, "embedder": "python:tests.daemon_scripted:HashEmbedder", "tensorboard": False,
        "environments": [{"spec": "arithmetic:digits=1"}, {"spec": "arithmetic:digits=2"}],
        "episodes_per_cycle": 6, "concurrency": 2, "ray": "local", "ray_workers": 2,
        "training": {"enabled": False}, "monitors": {"tasks": 0}, "budgets": {"cycles": 1},
    })
    assert asyncio.run(Daemon(tmp_path, cfg).run()) == "budget: cycles 1 >= 1"
    state = control.read_state(tmp_path)
    assert state["totals"]["episodes"] == 6
    with sqlite3.connect(tmp_path / "experience.db") as conn:
        (rows, distinct), = conn.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM episodes").fetchall()
        origins = {json.loads(m)["origin"] for (m,) in conn.execute("SELECT json_extract(episode_json, '$.metadata') "
                                                                     "FROM episodes")}
    assert rows == distinct == 6 and origins == {"daemon"}


def test_scale_bench_smoke_one_row_per_configuration(cluster):
    from bench.micro.scale import parse_args, report, run_bench

    args = parse_args(["--model", SCRIPTED, "--episodes", "4", "--concurrency", "2", "--ray-workers", "1",
                       "--repeats", "1", "--warmup", "1", "--no-write"])
    rows = run_bench(args)
    assert [r.name for r in rows] == ["in-process", "ray, 1 worker"]
    assert all(r.episodes_per_s > 0 and r.errors == 0 and len(r.samples) == 1 for r in rows)
    assert rows[0].final_accuracy == rows[1].final_accuracy  # greedy, same tasks, same scripted answers
    assert report(rows, args).count("\n| ") == 3  # header + one row per configuration
