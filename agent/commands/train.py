"""``selfevolve train`` and ``selfevolve models list|show|promote|rollback``.

    selfevolve train --method grpo-reflection --env arithmetic --steps 20
    selfevolve train --method sft --launcher accelerate --num-processes 2     # accelerate launch (trainer/launch.py)
    selfevolve models list
    selfevolve models promote v0003-grpo-reflection
    selfevolve models rollback

Training logic lives in :mod:`trainer.train`; this module only parses options, drives a Rich
progress bar from the trainer's callback and prints results.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
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

models_app = typer.Typer(help="Model versions: list, show, promote, roll back.", no_args_is_help=True)


def _library(workspace: Path | None):
    from memory.library import ExperienceLibrary

    return ExperienceLibrary(existing_workspace(workspace))  # reads (and adds versions to) an existing library


def train_command(
    method: str = typer.Option("grpo-reflection", "--method", "-m",
                               help="grpo-reflection | grpo | sft | dpo, or a method a plug-in registers (trainer.methods)."),
    steps: int = typer.Option(10, "--steps", "-n", help="Optimizer steps."),
    env: str | None = typer.Option(None, "--env", "-e", help="Train on this environment's episodes only."),
    workspace: Path | None = WorkspaceOption,
    resume: bool = typer.Option(False, "--resume", help="Continue the newest unfinished run from its checkpoint."),
    set_: list[str] = typer.Option([], "--set", help="Config override KEY=VALUE (JSON value), repeatable."),
    launcher: str = typer.Option("inprocess", "--launcher",
                                 help="inprocess (train in this process) | accelerate (`accelerate launch`, N processes)."),
    num_processes: int | None = typer.Option(None, "--num-processes",
                                             help="Processes for --launcher accelerate (default: the config's, else 1 per GPU, else 2)."),
    accelerate_config: str | None = typer.Option(
        None, "--accelerate-config", help="cpu_2proc | ddp | zero2 | zero3 (trainer/accelerate_configs/) or a path; "
        "default cpu_2proc without a GPU, ddp with one."),
    as_json: bool = JsonOption,
) -> None:
    """Fine-tune on the experience library and register the result as a candidate model version."""
    from trainer.launch import LaunchError, make_launcher
    from trainer.methods import method_names
    from trainer.train import NotEnoughDataError, train

    if method not in method_names():
        fail(f"unknown method {method!r}; choose one of {', '.join(method_names())}")
    overrides = _overrides(set_)
    try:
        launch = make_launcher(launcher, num_processes, accelerate_config, spell=lambda key: "--" + key.replace("_", "-"))
    except ValueError as e:
        fail(str(e))
    lib = _library(workspace)
    try:
        _check_envs_installed(lib, env)
        with Progress(TextColumn("[bold]train[/] {task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=as_json) as bar:
            task = bar.add_task(method, total=steps)

            def progress(step: int, total: int, logs: dict) -> None:
                shown = {k: logs[k] for k in ("loss", "reward", "retry_success_rate") if k in logs}
                desc = method + "".join(f" {k}={v:.3g}" for k, v in shown.items())
                bar.update(task, completed=step, total=total or steps, description=desc)

            # TRL/transformers print their log dicts to stdout: keep stdout for our result (--json).
            with contextlib.redirect_stdout(sys.stderr):
                mv = train(lib, method, steps=steps, env=env, overrides=overrides, progress=progress, resume=resume,
                           launcher=launch)
    except (NotEnoughDataError, FileNotFoundError, ValueError, LaunchError) as e:
        fail(str(e))
    except KeyError as e:  # e.g. an env that disappeared while training (its message names it)
        fail(str(e.args[0]) if e.args else repr(e))
    finally:
        lib.close()
    if as_json:
        print_json(mv.model_dump())
        return
    out.print(f"registered candidate [bold]{mv.id}[/] (parent {mv.parent}); adapter at {mv.adapter_path}")
    out.print(f"evaluate it, then `selfevolve models promote {mv.id}`")


def _overrides(items: list[str]) -> dict:
    """``--set KEY=VALUE`` items as a dict (JSON values, else the string)."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"--set expects KEY=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def _check_envs_installed(lib, env: str | None) -> None:
    """Every env whose episodes would be trained on must be installed (its verifier builds the rows): say which
    is missing, before loading a model, rather than a KeyError from inside the dataset builder."""
    from environments import get_environment

    for spec in [env] if env else lib.store.envs():
        try:
            get_environment(spec)
        except KeyError as e:
            fail(f"episodes of env {spec!r} cannot be trained on: {str(e.args[0]).rstrip('.')} — not installed "
                 f"(was its plug-in uninstalled?); reinstall it, or train on another env with --env")
        except ValueError as e:
            fail(f"--env {spec!r}: {e}")


def _key_metrics(metrics: dict) -> str:
    keys = ("train/reward_mean", "train/retry_success_rate_mean", "train_loss", "steps")
    return ", ".join(f"{k.removeprefix('train/')}={metrics[k]:.3g}" for k in keys if isinstance(metrics.get(k), int | float))


@models_app.command("list")
def list_models(workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Every model version with its parent, method, status, key metrics and last note (gate decision)."""
    with _library(workspace) as lib:
        versions, serving = lib.list_model_versions(), lib.serving_version().id
    if as_json:
        print_json({"serving": serving, "versions": [v.model_dump() for v in versions]})
        return
    table = Table(title=f"model versions (serving: {serving})")
    for col in ("id", "parent", "method", "status", "metrics", "note / gate"):
        table.add_column(col)
    for v in versions:
        status = f"[bold green]{v.status}[/]" if v.id == serving else v.status
        table.add_row(v.id, v.parent or "", v.method, status, _key_metrics(v.metrics), v.note)
    out.print(table)


@models_app.command("show")
def show_model(version: str, workspace: Path | None = WorkspaceOption) -> None:
    """One version as JSON."""
    with _library(workspace) as lib:
        try:
            mv = lib.get_model_version(version)
        except KeyError as e:
            fail(str(e.args[0]))
    print_json(mv.model_dump())


@models_app.command("promote")
def promote_model(version: str, workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Serve VERSION (the previously promoted version is retired)."""
    from trainer import registry

    with _library(workspace) as lib:
        try:
            mv = registry.promote(lib, version, note="promoted by hand")
        except (KeyError, ValueError) as e:
            fail(str(e.args[0]))
    print_json(mv.model_dump()) if as_json else out.print(f"serving [bold]{mv.id}[/]")


@models_app.command("rollback")
def rollback_model(workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Retire the served version and serve its parent (or the previous promoted one, or the base)."""
    from trainer import registry

    with _library(workspace) as lib:
        try:
            mv = registry.rollback(lib)
        except ValueError as e:
            fail(str(e))
    print_json(mv.model_dump()) if as_json else out.print(f"rolled back; serving [bold]{mv.id}[/]")


def register(app: typer.Typer) -> None:
    """Add ``train`` and the ``models`` sub-app to the main app."""
    app.command("train")(train_command)
    app.add_typer(models_app, name="models")
