"""``selfevolve run``: episodes of one environment through the episode graph, remembered in the workspace.

    selfevolve run --env arithmetic --episodes 16
    selfevolve run --env countdown --episodes 64 --max-attempts 2 --concurrency 16 --json
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
    as_json: bool = JsonOption,
) -> None:
    """Run episodes (solve → critique → verify → reflect → retry) and record them in the experience library."""
    if split not in ("train", "eval"):
        fail(f"--split must be train or eval, got {split!r}")
    environment, config, feedback_source = _setup(env, feedback, max_attempts=max_attempts, critique=critique,
                                                  retrieval=retrieval, k=k, temperature=temperature, solve_tokens=max_tokens,
                                                  max_stored_chars=max_stored_chars)
    seed = random.randrange(1_000_000) if seed is None else seed
    try:
        tasks = environment.sample(episodes, split=split, seed=seed)  # type: ignore[arg-type]
    except RuntimeError as e:  # a task space too small for this split: the message names the fix
        fail(str(e))
    console.print(f"seed {seed} (--seed {seed} runs the same tasks again)", highlight=False)
    run_config = {"model": model, "seed": seed, "split": split, "feedback": feedback, **config.model_dump()}
    purpose = "eval" if split == "eval" else "train"  # held-out tasks run on purpose are a measurement
    with writable_workspace(workspace) as ws:  # removed again if it is new and nothing gets recorded
        run_id, version_id, summary = _record_run(ws, model, version, tasks, environment, config, feedback_source,
                                                  run_config, concurrency, seed if reproducible else None, as_json,
                                                  purpose)
    result = {"run_id": run_id, "env": environment.spec, "model_version": version_id, "seed": seed, "workspace": str(ws),
              **summary.to_dict()}
    result.pop("episode_ids")
    if as_json:
        print_json(result)
    else:
        _print_summary(result)
    if summary.errors:
        console.print(f"[red]{len(summary.errors)} episode(s) failed with errors (not the model's): {summary.errors[0].error}[/]")
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


def _record_run(ws, model, version, tasks, environment, config, feedback_source, run_config, concurrency, seed, quiet,
                purpose):
    """Run the episodes under a ``Run`` record in the workspace's library; (run id, served version, summary)."""
    from agent.graph import GraphDeps
    from agent.serving import open_library, serving_policy
    from memory.records import Run

    library = open_library(ws)
    try:
        with console.status(f"loading model {model}..."):
            try:
                policy = serving_policy(model, library, version)
            except (ValueError, FileNotFoundError, KeyError, ConnectionError) as e:
                fail(str(e).strip("'\""))
        run = Run(kind="run", env=environment.spec, model_version=policy.version, config=run_config)
        library.start_run(run)
        deps = GraphDeps(policy, environment, config, library, feedback_source)
        summary = _run_with_progress(tasks, deps, concurrency, run.id, seed, quiet, purpose)
        library.finish_run(run.id, summary.to_dict())
    finally:
        library.close()
    return run.id, policy.version, summary


def _run_with_progress(tasks, deps, concurrency, run_id, seed, quiet, purpose="train"):
    from agent.runner import run_episodes

    progress = Progress(
        TextColumn("[bold]episodes"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[acc]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=False, transient=quiet,
    )
    counts = {"done": 0, "first": 0, "final": 0}
    with progress:
        bar = progress.add_task("run", total=len(tasks), acc="")

        def on_episode(episode, error):
            counts["done"] += 1
            if episode is not None:
                counts["first"] += episode.first_success
                counts["final"] += episode.success
            acc = f"first-try {counts['first']}/{counts['done']}  final {counts['final']}/{counts['done']}"
            progress.update(bar, advance=1, acc=acc)

        async def main():
            try:
                return await run_episodes(tasks, deps, concurrency=concurrency, run_id=run_id, seed=seed, on_episode=on_episode,
                                          purpose=purpose)
            finally:
                await deps.policy.aclose()

        _, summary = asyncio.run(main())
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
