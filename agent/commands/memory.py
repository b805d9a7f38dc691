"""``selfevolve memory stats|search|show|export|reindex``: look into the experience library.

    selfevolve memory stats
    selfevolve memory search "two-digit addition with carries" --env arithmetic --success -k 3
    selfevolve memory show ep-0123abcd --json
    selfevolve memory export data/episodes.jsonl --env countdown --success
    selfevolve memory export data/reflections --format hf --failure-first
    selfevolve memory reindex

Every command takes ``--workspace`` (default ``./.selfevolve``), ``--chroma-url`` for a shared Chroma
server, and ``--json`` for one machine-readable object on stdout.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    existing_workspace,
    fail,
    out,
    print_json,
)

if TYPE_CHECKING:
    from memory.library import ExperienceLibrary

memory_app = typer.Typer(help="Search, inspect and export the experience library.", no_args_is_help=True)

ChromaOption = typer.Option(
    None, "--chroma-url", help="Chroma server URL (env SELFEVOLVE_CHROMA_URL; default: embedded index in the workspace)."
)
EnvOption = typer.Option(None, "--env", "-e", help="Only this environment spec, e.g. arithmetic:digits=2.")
OutcomeOption = typer.Option(None, "--success/--failure", help="Only episodes that finally succeeded / failed.")


def register(app: typer.Typer) -> None:
    app.add_typer(memory_app, name="memory")


@contextmanager
def _library(workspace: Path | None, chroma_url: str | None) -> Iterator[ExperienceLibrary]:
    from memory.index import IndexUnavailable
    from memory.keeper import IndexBusy
    from memory.library import ExperienceLibrary
    from memory.store import SchemaError

    path = existing_workspace(workspace)  # reading only: a mistyped path is an error, not a new library
    try:
        lib = ExperienceLibrary(path, chroma_url=chroma_url)
    except (IndexUnavailable, SchemaError) as e:
        fail(str(e))
    try:
        yield lib
    except (IndexUnavailable, IndexBusy) as e:  # one line naming the fix, never a traceback
        fail(str(e))
    finally:
        lib.close()


def _recorded_env(lib: ExperienceLibrary, env: str | None) -> str | None:
    """``--env`` as recorded (canonical spec), or a one-line error listing the recorded envs: a typo must not
    look like "no matching episodes" with exit 0."""
    if env is None:
        return None
    recorded = lib.store.envs()
    if env in recorded:
        return env
    from environments import get_environment

    try:
        canonical = get_environment(env).spec
    except (KeyError, ValueError):
        canonical = None
    if canonical in recorded:
        return canonical
    fail(f"no episodes of env {env!r} in {lib.workspace}; recorded envs: {', '.join(recorded) or '(none)'}")


@contextmanager
def _progress(label: str, total: int, quiet: bool) -> Iterator[Any]:
    """A Rich progress bar on stderr; yields ``advance(n)``."""
    if quiet or total == 0:
        yield lambda n: None
        return
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


@memory_app.command("stats")
def stats_cmd(
    env: str | None = EnvOption, workspace: Path | None = WorkspaceOption, chroma_url: str | None = ChromaOption,
    as_json: bool = JsonOption,
) -> None:
    """Episodes, first-try and final accuracy per environment and model version, and the index status."""
    with _library(workspace, chroma_url) as lib:
        stats = lib.stats(env=_recorded_env(lib, env))
    if as_json:
        print_json(stats)
        return
    table = Table(title=f"Experience library: {stats['episodes']} episodes ({stats['workspace']})")
    for col in ("environment", "episodes", "first try", "final", "recovered by retry", "tokens", "index"):
        table.add_column(col, justify="left" if col == "environment" else "right")
    for name, s in stats["envs"].items():
        idx = stats["index"]["envs"].get(name, {})
        behind = idx.get("behind")
        table.add_row(
            name, str(s["episodes"]), _pct(s["first_try_accuracy"]), _pct(s["final_accuracy"]), str(s["recovered"]),
            f"{s['tokens']:,}", "?" if behind is None else ("in sync" if behind == 0 else f"behind {behind}"),
        )
    out.print(table)
    versions = Table(title="By model version")
    for col in ("version", "episodes", "first try", "final"):
        versions.add_column(col, justify="left" if col == "version" else "right")
    for name, s in stats["model_versions"].items():
        versions.add_row(name, str(s["episodes"]), _pct(s["first_try_accuracy"]), _pct(s["final_accuracy"]))
    out.print(versions)
    if stats.get("self_reward"):
        gap = Table(title="Self-reward vs hidden verifier (generation-verification gap)")
        for col in ("feedback", "version", "attempts", "agreement", "false positives", "self reward", "true reward"):
            gap.add_column(col, justify="left" if col in ("feedback", "version") else "right")
        for source, by_version in stats["self_reward"].items():
            for name, g in by_version.items():
                gap.add_row(source, name, str(g["attempts"]), _pct(g["agreement"]), _pct(g["false_positive_rate"]),
                            f"{g['mean_self_reward']:.2f}", f"{g['mean_true_reward']:.2f}")
        out.print(gap)
    status = stats["index"]["status"]
    hint = "" if status == "in sync" else " (run `selfevolve memory reindex`, or just search: it repairs)"
    out.print(f"Index at {stats['index']['location']}: {status}{hint}; verified {stats['index']['verified']}",
              highlight=False)


@memory_app.command("search")
def search_cmd(
    text: str = typer.Argument(..., help="What to look for, in words."),
    env: str | None = EnvOption,
    success: bool | None = OutcomeOption,
    k: int = typer.Option(5, "-k", min=1, max=100, help="How many hits."),
    model_version: str | None = typer.Option(None, "--model-version", help="Only episodes of this model version."),
    workspace: Path | None = WorkspaceOption, chroma_url: str | None = ChromaOption, as_json: bool = JsonOption,
) -> None:
    """Semantic search over recorded episodes (cosine similarity of MiniLM embeddings)."""
    with _library(workspace, chroma_url) as lib:
        hits = lib.search(text, env=_recorded_env(lib, env), success=success, k=k, model_version=model_version)
    if as_json:
        print_json({"query": text, "hits": [h.to_dict() for h in hits]})
        return
    if not hits:
        out.print("No matching episodes. Check `selfevolve memory stats` for what is recorded.")
        return
    table = Table(title=f"Top {len(hits)} for {text!r}")
    for col in ("score", "episode", "env", "first try", "final", "hint"):
        table.add_column(col, overflow="fold")
    for h in hits:
        table.add_row(f"{h.score:.3f}", h.episode_id, h.env, "✓" if h.first_success else "✗",
                      "✓" if h.success else "✗", h.hint)
    out.print(table)


@memory_app.command("show")
def show_cmd(
    episode_id: str = typer.Argument(..., help="Episode id (from search or export)."),
    workspace: Path | None = WorkspaceOption, chroma_url: str | None = ChromaOption, as_json: bool = JsonOption,
) -> None:
    """One episode in full: the task, every attempt, each model call's prompt and output."""
    with _library(workspace, chroma_url) as lib:
        try:
            ep = lib.get(episode_id)
        except KeyError as e:
            fail(str(e.args[0]))
    if as_json:
        print_json(ep.model_dump(mode="json"))
        return
    out.rule(f"{ep.id}  env={ep.env}  version={ep.model_version}  success={ep.success}")
    out.print(f"[bold]task[/] {ep.task.id}: {ep.task.question}", highlight=False)
    for a in ep.attempts:
        verdict = "[green]correct[/]" if a.feedback.success else "[red]wrong[/]"
        out.rule(f"attempt {a.index}", style="dim")
        for call in (a.solve, a.critique, a.reflect):
            if call is not None:
                out.print(f"[bold cyan]{call.node}[/] ({call.prompt_tokens}+{call.completion_tokens} tokens)")
                out.print(f"  [dim]last prompt message:[/] {call.messages[-1]['content'] if call.messages else ''}",
                          highlight=False)
                out.print(f"  [dim]output:[/] {call.output}", highlight=False)
        out.print(f"answer={a.answer!r} {verdict}: {a.feedback.message}", highlight=False)
    if ep.error:
        out.print(f"[red]error:[/] {ep.error}", highlight=False)


@memory_app.command("export")
def export_cmd(
    path: Path = typer.Argument(..., help="Output: a .jsonl file, or a directory for --format hf."),
    format: str = typer.Option("jsonl", "--format", "-f", help="jsonl (Episode JSON per line) or hf (datasets)."),
    env: str | None = EnvOption, success: bool | None = OutcomeOption,
    first_success: bool | None = typer.Option(None, "--first-success/--failure-first",
                                              help="Only episodes whose first attempt succeeded / failed."),
    model_version: str | None = typer.Option(None, "--model-version", help="Only episodes of this model version."),
    workspace: Path | None = WorkspaceOption, chroma_url: str | None = ChromaOption, as_json: bool = JsonOption,
) -> None:
    """Write episodes for training or inspection (jsonl round-trips with Episode.model_validate_json)."""
    if format not in ("jsonl", "hf"):
        fail(f"--format must be jsonl or hf, got {format!r}")
    filters = {"env": env, "success": success, "first_success": first_success, "model_version": model_version}
    with _library(workspace, chroma_url) as lib:
        filters["env"] = _recorded_env(lib, env)
        total = lib.count(**filters)
        if total == 0:
            fail("no episodes match these filters; see `selfevolve memory stats`")
        with _progress("exporting", total, as_json) as advance:
            n = lib.export(path, format=format, progress=advance, **filters)  # type: ignore[arg-type]
    if as_json:
        print_json({"path": str(path), "format": format, "episodes": n})
    else:
        out.print(f"Wrote {n} episodes to {path} ({format}).", highlight=False)


@memory_app.command("reindex")
def reindex_cmd(
    env: str | None = EnvOption, workspace: Path | None = WorkspaceOption, chroma_url: str | None = ChromaOption,
    wait: float = typer.Option(30.0, "--wait", min=0.0, help="Seconds to wait for another process that owns the index."),
    reembed: bool = typer.Option(False, "--reembed", help="Embed every episode again (after changing the embedder)."),
    as_json: bool = JsonOption,
) -> None:
    """Rebuild the Chroma index from SQLite (the truth): after a crash, a corrupt index, or a new server."""
    with _library(workspace, chroma_url) as lib:
        env = _recorded_env(lib, env)
        total = lib.count(env=env)
        with _progress("indexing", total, as_json) as advance:
            n = lib.reindex(env=env, progress=advance, wait_s=wait, reembed=reembed)
        status = lib.index_status()["status"]
    if as_json:
        print_json({"reindexed": n, "env": env, "index": status})
    else:
        out.print(f"Reindexed {n} episodes{f' of {env}' if env else ''}; index {status}.", highlight=False)
