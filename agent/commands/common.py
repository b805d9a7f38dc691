"""Helpers shared by CLI commands: workspace resolution, JSON output, error exits."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)
out = Console()

WORKSPACE_ENV = "SELFEVOLVE_WORKSPACE"
DEFAULT_WORKSPACE = ".selfevolve"

WorkspaceOption = typer.Option(
    None, "--workspace", "-w", help=f"Workspace directory (env {WORKSPACE_ENV}, default ./{DEFAULT_WORKSPACE})."
)
JsonOption = typer.Option(False, "--json", help="Print one JSON object instead of tables.")


def resolve_workspace(workspace: Path | None) -> Path:
    path = Path(workspace or os.environ.get(WORKSPACE_ENV) or DEFAULT_WORKSPACE).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line error (what went wrong and what to do) and exit."""
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)
