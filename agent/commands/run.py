"""``selfevolve run``: episodes of one environment through the episode graph, remembered in the workspace.

    selfevolve run --env arithmetic --episodes 16
    selfevolve run --env countdown --episodes 64 --max-attempts 2 --concurrency 16 --json
    selfevolve run --env arithmetic --episodes 64 --ray local --ray-workers 2     # episodes in Ray workers

With ``--ray`` the episodes run in Ray actors, each with its own policy, and this process records each
one once (agent/scale). Without it nothing imports Ray and the run is the in-process one.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from agent.commands.common import (
    JsonOption,
    WorkspaceOption,
    console,
    fail,
    out,
    print_json,
    writable_workspace,
)


def register(app: typer.Typer) -> None:
    app.command("run")(run_cmd)


def run_cmd(
    env: str = typer.Option(..., "--env", "-e", help="Environment spec, e.g. arithmetic or countdown."),
    episodes: int = typer.Option(16, "--episodes", "-n", min=1, help="How many episodes (one task each)."),
    workspace: Path | None = WorkspaceOption,
    model: str = typer.Option("default", "--model", "-m", help="Model spec: default | hf:<dir> | openai:<url>#<model> | vllm:<dir>."),
    version: str | None = typer.Option(None, "--version", help="Model version to serve (default: the promoted one)."),
    max_attempts: int = typer.Option(2, "--max-attempts", min=1, max=10, help="1 = no retry; 2 = reflect once and retry."),
    concurrency: int = typer.Option(16, "--concurrency", "-c", min=1, help="Episodes in flight (their calls are batched)."),
    split: str = typer.Option("train", "--split", help="train or eval tasks."),
    seed: int | None = typer.Option(None, "--seed", help="Which tasks (default: random, printed)."),
    reproducible: bool = typer.Option(
        False, "--reproducible", help="Seed every sampled call too (same samples again; slower: no batching of sampled calls)."
    ),
    temperature: float = typer.Option(0.7, "--temperature", min=0.0, help="Sampling temperature (0 = greedy)."),
    critique: bool = typer.Option(True, "--critique/--no-critique", help="Ask the model to judge its own answers."),
    retrieval: bool = typer.Option(True, "--retrieval/--no-retrieval", help="Show similar past successes."),
    k: int = typer.Option(2, "-k", min=0, max=10, help="How many past successes to show."),
    max_tokens: int = typer.Option(128, "--max-tokens", min=1, help="Max new tokens per solve/retry."),
    max_stored_chars: int = typer.Option(
        65_536, "--max-stored-chars", min=1_024, help="Longest text field stored per attempt (longer: cut, marked truncated)."
    ),
    feedback: str = typer.Option(
        "verifier", "--feedback", help="Reward source: verifier | majority[:k=4,threshold=0.6] | rubric | critique."
    ),
    ray: str | None = typer.Option(
        None, "--ray", metavar="local|auto|ADDRESS",
        help="Run the episodes in Ray workers: local = start a cluster in this process; auto = the `ray start` cluster "
             "here; HOST:PORT or ray://HOST:10001 = that cluster. This process records each episode once. "
             "Needs pip install 'selfevolve\\[scale]'."),
    ray_workers: int | None = typer.Option(
        None, "--ray-workers", min=1, help="Ray workers, each with its own policy (default: 2 local, else the cluster's "
                                           "CPUs); --concurrency episodes are spread over them."),
    ray_retries: int = typer.Option(3, "--ray-retries", min=0, help="Resubmissions of a task whose Ray worker died."),
    as_json: bool = JsonOption,
) -> None:
    """Run episodes (solve → critique → verify → reflect → retry) and record them in the experience library.

    With --ray local|auto|ADDRESS they run in Ray workers (a worker that dies mid-episode is replaced and
    its task resubmitted; every episode is recorded once, here)."""
    if split not in ("train", "eval"):
        fail(f"--split must be train or eval, got {split!r}")
    ray_opts = _ray_options(ray, ray_workers, ray_retries)
    environment, config, feedback_source = _setup(env, feedback, max_attempts=max_attempts, critique=critique,
                                                  retrieval=retrieval, k=k, temperature=temperature, solve_tokens=max_tokens,
                                                  max_stored_chars=max_stored_chars)
    seed = random.randrange(1_000_000) if seed is None else seed
    tasks = _sample(environment, episodes, split, seed)
    console.print(f"seed {seed} (--seed {seed} runs the same tasks again)", highlight=False)
    run_config = {"model": model, "seed": seed, "split": split, "feedback": feedback, **config.model_dump()}
    if ray_opts is not None:
        run_config["ray"] = ray_opts.model_dump()
    purpose = "eval" if split == "eval" else "train"  # held-out tasks run on purpose are a measurement
    with writable_workspace(workspace) as ws:  # removed again if it is new and nothing gets recorded
        run_id, version_id, summary, extra = _record_run(ws, model, version, tasks, environment, config, feedback_source,
                                                         run_config, concurrency, seed if reproducible else None, as_json,
                                                         purpose, ray_opts)
    _report({"run_id": run_id, "env": environment.spec, "model_version": version_id, "seed": seed, "workspace": str(ws),
             **summary.to_dict(), **extra}, summary.errors, as_json)


def _report(result: dict, errors: list, as_json: bool) -> None:
    """Print the run's result (a table, or JSON) and exit 1 if any episode failed with an error."""
    result.pop("episode_ids")
    if as_json:
        print_json(result)
    else:
        _print_summary(result)
    if errors:
        console.print(f"[red]{len(errors)} episode(s) failed with errors (not the model's): {errors[0].error}[/]")
        raise typer.Exit(1)


def _setup(env_spec: str, feedback: str, **episode: object):
    """(environment, episode config, feedback source) from the options, or a one-line error naming the fix."""
    from agent.feedback import make_feedback_source
    from agent.graph import EpisodeConfig
    from environments import get_environment

    try:
        environment = get_environment(env_spec)
    except (KeyError, ValueError) as e:
        fail(str(e).strip("'\""))
    try:
        config = EpisodeConfig(**episode)  # type: ignore[arg-type]
    except ValueError as e:
        fail(str(e))
    try:
        return environment, config, make_feedback_source(feedback, environment)
    except ValueError as e:
        fail(str(e))


def _sample(environment, episodes: int, split: str, seed: int):
    try:
        return environment.sample(episodes, split=split, seed=seed)  # type: ignore[arg-type]
    except RuntimeError as e:  # a task space too small for this split: the message names the fix
        fail(str(e))


def _ray_options(address: str | None, workers: int | None, retries: int):
    """The Ray options, or None without ``--ray``; a one-line error for a bad address or a missing Ray."""
    if address is None:
        if workers is not None:
            fail("--ray-workers needs --ray: add --ray local (a cluster in this process) or --ray ADDRESS")
        return None
    from pydantic import ValidationError

    from agent.scale.cluster import INSTALL_HINT, ray_installed
    from agent.scale.session import RayOptions

    if not ray_installed():
        fail(f"--ray needs Ray, which is not installed: {INSTALL_HINT}")
    try:
        return RayOptions(address=address, workers=workers, max_retries=retries)
    except ValidationError as e:
        fail(f"--ray: {e.errors()[0]['msg'].removeprefix('Value error, ')}")


def _record_run(ws, model, version, tasks, environment, config, feedback_source, run_config, concurrency, seed, quiet,
                purpose, ray_opts=None):
    """Run the episodes under a ``Run`` record in the workspace's library; (run id, served version, summary,
    extra result fields)."""
    from agent.graph import GraphDeps
    from agent.serving import open_library, serving_policy
    from memory.records import Run

    library = open_library(ws)
    if ray_opts is not None:
        try:
            return _record_run_ray(library, model, version, tasks, environment, config, run_config, concurrency, seed,
                                   quiet, purpose, ray_opts)
        finally:
            library.close()
    try:
        with console.status(f"loading model {model}..."):
            try:
                policy = serving_policy(model, library, version)
            except (ValueError, FileNotFoundError, KeyError, ConnectionError) as e:
                fail(str(e).strip("'\""))
        run = Run(kind="run", env=environment.spec, model_version=policy.version, config=run_config)
        library.start_run(run)
        deps = GraphDeps(policy, environment, config, library, feedback_source)
        summary = _run_with_progress(len(tasks), quiet, _in_process(tasks, deps, concurrency, run.id, seed, purpose))
        library.finish_run(run.id, summary.to_dict())
    finally:
        library.close()
    return run.id, policy.version, summary, {}


def _record_run_ray(library, model, version, tasks, environment, config, run_config, concurrency, seed, quiet, purpose,
                    ray_opts):
    """:func:`_record_run` on Ray workers: the served version is resolved here and loaded by every worker."""
    from dataclasses import asdict

    from agent.scale.cluster import RayUnavailableError
    from agent.scale.pool import WorkerStartError
    from agent.scale.session import RaySession
    from agent.serving import serving_target
    from memory.records import Run

    try:
        adapter, version_id = serving_target(model, library, version)
    except (ValueError, FileNotFoundError, KeyError) as e:
        fail(str(e).strip("'\""))
    session = RaySession(ray_opts, model, version=version_id, adapter_path=adapter, concurrency=concurrency)
    with console.status(f"starting Ray workers ({ray_opts.address}) with model {model}..."):
        try:
            session.open()
        except (RayUnavailableError, WorkerStartError) as e:
            fail(str(e))
    try:
        run = Run(kind="run", env=environment.spec, model_version=version_id, config=run_config)
        library.start_run(run)

        def start(on_episode):
            return session.collect([(environment, tasks)], config, library=library, feedback=run_config["feedback"],
                                   run_id=run.id, seed=seed, purpose=purpose, on_episode=on_episode)

        summary = _run_with_progress(len(tasks), quiet, start)
        ray_info = {"workers": session.workers, **asdict(session.stats)}
        library.finish_run(run.id, {**summary.to_dict(), "ray": ray_info})
    finally:
        session.close()
    return run.id, version_id, summary, {"ray": ray_info}


def _in_process(tasks, deps, concurrency, run_id, seed, purpose):
    """The in-process runner as ``start(on_episode)`` for :func:`_run_with_progress` (closes the policy after)."""
    from agent.runner import run_episodes

    async def start(on_episode):
        try:
            return await run_episodes(tasks, deps, concurrency=concurrency, run_id=run_id, seed=seed, on_episode=on_episode,
                                      purpose=purpose)
        finally:
            await deps.policy.aclose()

    return start


def _run_with_progress(total, quiet, start):
    """Run ``start(on_episode)`` (a coroutine of (episodes, summary)) under a progress bar; the summary."""
    progress = Progress(
        TextColumn("[bold]episodes"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[acc]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=False, transient=quiet,
    )
    counts = {"done": 0, "first": 0, "final": 0}
    with progress:
        bar = progress.add_task("run", total=total, acc="")

        def on_episode(episode, error):
            counts["done"] += 1
            if episode is not None:
                counts["first"] += episode.first_success
                counts["final"] += episode.success
            acc = f"first-try {counts['first']}/{counts['done']}  final {counts['final']}/{counts['done']}"
            progress.update(bar, advance=1, acc=acc)

        _, summary = asyncio.run(start(on_episode))
    return summary


def _print_summary(r: dict) -> None:
    table = Table(title=f"run {r['run_id']} — {r['env']} — model version {r['model_version']}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    n = r["episodes"]
    table.add_row("episodes", str(n))
    table.add_row("seed", str(r["seed"]))
    table.add_row("first-try accuracy", f"{r['first_try_accuracy']:.1%} ({round(r['first_try_accuracy'] * n)}/{n})")
    table.add_row("final accuracy", f"{r['final_accuracy']:.1%} ({round(r['final_accuracy'] * n)}/{n})")
    table.add_row("recovered by retry", f"{r['recovered_by_retry']} of {r['retried']} retried failures")
    table.add_row("retrieval hits", f"{r['retrieval_hits']} of {n} episodes shown a past success")
    if r["critique_agreement"] is not None:
        table.add_row("self-critique agrees with verifier", f"{r['critique_agreement']:.1%}")
    table.add_row("tokens (prompt+completion)", f"{r['tokens']:,}")
    table.add_row("seconds", f"{r['seconds']:.1f}")
    table.add_row("completion tokens/s", f"{r['completion_tokens_per_second']:.1f}")
    table.add_row("workspace", r["workspace"])
    out.print(table)
    if r["retried"] and r["recovered_by_retry"] == 0:
        out.print(f"No retry turned a failure into a success here ({r['retried']} tried). At 135M recovery is rare "
                  "and depends on the task band: docs/reflection.md measures it per arm and env.")
