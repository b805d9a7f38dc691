"""``selfevolve eval``: held-out accuracy of a model version, and the promotion gate against another.

    selfevolve eval --env arithmetic -n 64                          # the serving version
    selfevolve eval --model v0001-grpo-reflection --env arithmetic -n 64 --against serving --apply

Results (per-task outcomes and 95% Wilson intervals) are stored on the version, so evaluating the same
version on the same tasks again reuses them (``--fresh`` re-runs). ``--against`` compares two versions on
the *same* tasks (paired) with the gate of :mod:`trainer.gate`; ``--apply`` promotes or rejects the
candidate accordingly and stores the decision where ``selfevolve models list`` shows it. Evaluation
episodes are not recorded (see :mod:`agent.cycle`, which this command only drives and prints).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
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
    app.command("eval")(eval_cmd)


class _EpisodesFailed(RuntimeError):
    """An evaluation episode failed with an error: nothing is stored or gated on a partial evaluation."""


def eval_cmd(
    env: str = typer.Option(..., "--env", "-e", help="Environment spec (its eval split is used)."),
    n: int = typer.Option(64, "-n", min=1, help="Number of distinct held-out tasks."),
    version: str | None = typer.Option(None, "--model", "--version", help="Model version id (default: the serving one)."),
    against: str | None = typer.Option(None, "--against", help="Compare with this version ('serving' for the current one)."),
    apply: bool = typer.Option(False, "--apply", help="With --against: promote or reject --model by the gate."),
    margin: float = typer.Option(0.0, "--margin", min=0.0, max=0.99, help="Gate: required accuracy gain."),
    primary: str = typer.Option("final", "--primary", help="Gate metric: first (first try) or final (after retry)."),
    base_model: str = typer.Option("default", "--base-model", help="Model spec the versions' adapters apply to."),
    seed: int = typer.Option(0, "--seed", help="Which held-out tasks (same seed = same tasks)."),
    max_attempts: int = typer.Option(2, "--max-attempts", min=1, max=10),
    max_tokens: int = typer.Option(128, "--max-tokens", min=1),
    fresh: bool = typer.Option(False, "--fresh", help="Re-run even if a stored result exists."),
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """First-try and final accuracy on held-out tasks with 95% CIs; optionally gate against another version."""
    from agent.cycle import GateRule, HeldOut
    from agent.serving import open_library
    from environments import get_environment

    if primary not in ("first", "final"):
        fail(f"--primary must be first or final, got {primary!r}")
    if apply and not against:
        fail("--apply needs --against VERSION (the version to beat)")
    try:
        environment = get_environment(env)
    except (KeyError, ValueError) as e:
        fail(str(e).strip("'\""))
    held = HeldOut.each([environment], n, seed=seed, max_attempts=max_attempts, max_tokens=max_tokens)
    with writable_workspace(workspace) as ws:
        library = open_library(ws)
        try:
            result = _run(library, held, version, against, GateRule(primary=primary, margin=margin),  # type: ignore[arg-type]
                          apply=apply, base_model=base_model, fresh=fresh, quiet=as_json)
        finally:
            library.close()
    if as_json:
        print_json(result)
    else:
        _print(result, environment.spec)


def _run(library, held, version: str | None, against: str | None, rule, *, apply: bool, base_model: str, fresh: bool,
         quiet: bool) -> dict[str, Any]:
    """Evaluate ``version`` (and gate it against ``against``) through the cycle; the JSON result."""
    from agent.cycle import gate

    evaluate_one = _evaluator(library, held, base_model, fresh, quiet)
    try:
        vid = library.get_model_version(version).id if version else library.serving_version().id
        if against not in (None, "serving"):
            library.get_model_version(against)  # an unknown version fails now, before any episode runs
        if against is None:
            return _row(asyncio.run(evaluate_one(vid)))
        outcome = asyncio.run(gate(library, vid, evaluate_one, against=None if against == "serving" else against,
                                   rule=rule, apply=apply))
    except _EpisodesFailed as e:
        fail(str(e), code=1)
    except (KeyError, ValueError, FileNotFoundError) as e:
        fail(str(e).strip("'\""))
    result = {**_row(outcome.candidate), "against": _row(outcome.current), "gate": outcome.decision.model_dump()}
    if outcome.applied:
        result["status"] = library.get_model_version(vid).status
    return result


def _evaluator(library, held, base_model: str, fresh: bool, quiet: bool):
    """``evaluate_one(version_id)`` for the gate: reuse a stored evaluation or run one with a progress bar."""
    from agent.cycle import evaluate_or_reuse, stored_evaluation
    from agent.evaluate import eval_key
    from agent.serving import serving_policy

    [(env, n)] = held.counts

    async def evaluate_one(version_id: str):
        stored = None if fresh else stored_evaluation(library, version_id, held)
        if stored is not None:
            console.print(f"[dim]{version_id}: reusing stored evaluation ({eval_key(env.spec, n, held.seed, held.max_attempts)})[/]")
            return stored
        progress = Progress(TextColumn(f"[bold]eval {version_id}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=console, transient=quiet)
        with progress:
            bar = progress.add_task("eval", total=n)
            ev = await evaluate_or_reuse(library, version_id, held, lambda v: serving_policy(base_model, library, v),
                                         fresh=True, on_episode=lambda e, err: progress.advance(bar))
        if ev.errors:
            raise _EpisodesFailed(f"{len(ev.errors)} evaluation episode(s) failed (not the model's fault): {ev.errors[0]}")
        return ev

    return evaluate_one


def _row(evaluation) -> dict[str, Any]:
    [res] = evaluation.results.values()
    return {**res.summary(), "version": evaluation.version}


def _print(result: dict[str, Any], env_spec: str) -> None:
    table = Table(title=f"held-out evaluation — {env_spec}")
    for col in ("version", "n", "first-try accuracy (95% CI)", "final accuracy (95% CI)"):
        table.add_column(col)
    for row in [result, result.get("against")]:
        if row:
            table.add_row(row["version"], str(row["n"]),
                          f"{row['first_try_accuracy']:.1%} [{row['first_try_ci95'][0]:.1%}, {row['first_try_ci95'][1]:.1%}]",
                          f"{row['final_accuracy']:.1%} [{row['final_ci95'][0]:.1%}, {row['final_ci95'][1]:.1%}]")
    out.print(table)
    if "gate" in result:
        verdict = "[green]promote[/]" if result["gate"]["promote"] else "[yellow]keep current[/]"
        out.print(f"gate: {verdict} — {result['gate']['reason']}")
        if "status" in result:
            out.print(f"{result['version']} is now [bold]{result['status']}[/]")
