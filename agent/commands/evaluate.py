"""``selfevolve eval``: held-out accuracy of a model version, and the promotion gate against another.

    selfevolve eval --env arithmetic -n 64                          # the serving version
    selfevolve eval --model v0001-grpo-reflection --env arithmetic -n 64 --against serving --apply

Results (per-task outcomes and 95% Wilson intervals) are stored on the version, so evaluating the same
version on the same tasks again reuses them (``--fresh`` re-runs). ``--against`` compares two versions on
the *same* tasks (paired) with the gate of :mod:`trainer.gate`; ``--apply`` promotes or rejects the
candidate accordingly and stores the decision where ``selfevolve models list`` shows it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

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
    resolve_workspace,
)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)


def _evaluate_version(library, version, env, n, seed, attempts, max_tokens, model, fresh, quiet):
    from agent.evaluate import eval_key, evaluate, store_result, stored_outcomes
    from agent.serving import serving_policy

    mv = library.get_model_version(version) if version else library.serving_version()
    key = eval_key(env.spec, n, seed, attempts)
    cached = None if fresh else stored_outcomes(library, mv.id, key)
    if cached is not None:
        entry = mv.metrics["eval"][key]
        console.print(f"[dim]{mv.id}: reusing stored evaluation ({key})[/]")
        return mv.id, cached, entry
    policy = serving_policy(model, library, mv.id)
    progress = Progress(TextColumn(f"[bold]eval {mv.id}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console, transient=quiet)

    async def main():
        try:
            with progress:
                bar = progress.add_task("eval", total=n)
                return await evaluate(policy, env, n, seed=seed, max_attempts=attempts, max_tokens=max_tokens,
                                      library=library, on_episode=lambda e, err: progress.advance(bar))
        finally:
            await policy.aclose()

    result = asyncio.run(main())
    if result.errors:
        fail(f"{len(result.errors)} evaluation episode(s) failed (not the model's fault): {result.errors[0]}", code=1)
    store_result(library, mv.id, result)
    outcomes = {t: (f, g) for t, f, g in zip(result.task_ids, result.first, result.final, strict=True)}
    return mv.id, outcomes, result.summary()


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
    library = open_library(resolve_workspace(workspace))
    try:
        try:
            vid, outcomes, summary = _evaluate_version(library, version, environment, n, seed, max_attempts, max_tokens, base_model, fresh, as_json)
        except (KeyError, ValueError, FileNotFoundError) as e:
            fail(str(e).strip("'\""))
        result = {"version": vid, **{k: v for k, v in summary.items() if k != "outcomes"}}
        if against:
            from trainer.gate import TaskOutcome, evaluate_gate
            from trainer.registry import apply_gate

            other = None if against == "serving" else against
            try:
                oid, other_outcomes, other_summary = _evaluate_version(library, other, environment, n, seed, max_attempts, max_tokens, base_model, fresh, as_json)
            except (KeyError, ValueError, FileNotFoundError) as e:
                fail(str(e).strip("'\""))
            if oid == vid:
                fail(f"--model and --against are the same version ({vid})")
            decision = evaluate_gate(
                {t: TaskOutcome(bool(a), bool(b)) for t, (a, b) in outcomes.items()},
                {t: TaskOutcome(bool(a), bool(b)) for t, (a, b) in other_outcomes.items()},
                candidate_id=vid, current_id=oid, primary=primary, margin=margin,  # type: ignore[arg-type]
            )
            result["against"] = {"version": oid, **{k: v for k, v in other_summary.items() if k != "outcomes"}}
            result["gate"] = decision.model_dump()
            if apply:
                mv = library.get_model_version(vid)
                library.add_model_version(mv.model_copy(update={"metrics": {**mv.metrics, "gate": decision.model_dump()}}))
                apply_gate(library, vid, decision)
                result["status"] = library.get_model_version(vid).status
    finally:
        library.close()

    if as_json:
        print_json(result)
        return
    table = Table(title=f"held-out evaluation — {environment.spec}")
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
