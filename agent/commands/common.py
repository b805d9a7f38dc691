"""Helpers shared by CLI commands: workspace resolution, JSON output, error exits.

Workspaces: a command that only reads (``memory``, ``models``, ``train``, ``status``) takes
:func:`existing_workspace` and never creates one, so a mistyped ``--workspace`` is an error, not a new
empty library. A command that records (``run``, ``eval``, ``daemon``, ``serve``) takes
:func:`resolve_workspace`, or :func:`writable_workspace` to remove the directory again when it created
it and failed before recording anything. Both refuse a path that is a file or not writable in one line.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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


LIBRARY_FILE = "experience.db"


def workspace_path(workspace: Path | None) -> Path:
    """The workspace path (option, env, default), refused if it names a file; nothing is created."""
    path = Path(workspace or os.environ.get(WORKSPACE_ENV) or DEFAULT_WORKSPACE).expanduser()
    if path.exists() and not path.is_dir():
        fail(f"workspace {path} is a file, not a directory: pass --workspace DIR (or set ${WORKSPACE_ENV})")
    return path


def existing_workspace(workspace: Path | None) -> Path:
    """The workspace of a command that only reads: it must already hold an experience library."""
    path = workspace_path(workspace)
    if not (path / LIBRARY_FILE).is_file():
        fail(f"no experience library in {path} (nothing was recorded there): check --workspace, or record episodes "
             f"first with `selfevolve run --env ENV --workspace {path}`")
    return path


def resolve_workspace(workspace: Path | None) -> Path:
    """The workspace of a command that records: created if missing; refused if a file or not writable."""
    path = workspace_path(workspace)
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            fail(f"workspace {path} is not writable: fix its permissions or pass another --workspace DIR")
        return path
    try:
        path.mkdir(parents=True)
    except OSError as e:
        fail(f"cannot create workspace {path}: {e.strerror or e}; pass a writable --workspace DIR")
    return path


def _nothing_recorded(path: Path) -> bool:
    """Whether the library at ``path`` holds no episode, run or trained version (unreadable: assume it does)."""
    db = path / LIBRARY_FILE
    if not db.exists():
        return True
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            n = sum(conn.execute(q).fetchone()[0] for q in (
                "SELECT COUNT(*) FROM episodes", "SELECT COUNT(*) FROM runs",
                "SELECT COUNT(*) FROM model_versions WHERE id != 'base'"))
    except sqlite3.Error:
        return False
    return n == 0


@contextmanager
def writable_workspace(workspace: Path | None) -> Iterator[Path]:
    """:func:`resolve_workspace` for one command; if the command created the directory and then fails
    before recording anything, the directory is removed (no empty library left behind by a typo)."""
    created = not workspace_path(workspace).exists()
    path = resolve_workspace(workspace)
    try:
        yield path
    except BaseException as e:
        if created and getattr(e, "exit_code", 1) != 0 and _nothing_recorded(path):
            shutil.rmtree(path, ignore_errors=True)
        raise


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line error (what went wrong and what to do) and exit."""
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)
