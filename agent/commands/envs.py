"""``selfevolve envs list|sample|check``: look at environments and try a verifier by hand.

    selfevolve envs list
    selfevolve envs sample arithmetic:digits=2 -n 3 --split eval --json
    selfevolve envs sample countdown -n 1 --json > task.json
    echo '<answer>1 + 2</answer>' > answer.txt
    selfevolve envs check countdown answer.txt --task task.json
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from agent.commands.common import JsonOption, fail, out, print_json

envs_app = typer.Typer(help="List, sample and check task environments.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(envs_app, name="envs")


def _load(spec: str):
    from environments import get_environment

    try:
        return get_environment(spec)
    except (KeyError, ValueError) as e:
        fail(str(e).strip("'\""))


@envs_app.command("list")
def list_cmd(
    all_tasks: bool = typer.Option(False, "--all", help="Also list every reasoning-gym task name."),
    as_json: bool = JsonOption,
) -> None:
    """Registered environments (built-ins and entry-point plug-ins) and their options."""
    from environments import list_environments

    rows = []
    for name, cls in list_environments().items():
        options = {k: (f.description or "") for k, f in cls.config_class.model_fields.items()}
        doc = (cls.__doc__ or "").strip().splitlines()
        rows.append({"name": name, "module": cls.__module__, "description": doc[0] if doc else "", "options": options})
    extra = {}
    if all_tasks:
        from environments.reasoning_gym_env import reasoning_gym_tasks

        extra["reasoning_gym_tasks"] = reasoning_gym_tasks()
    if as_json:
        print_json({"environments": rows, **extra})
        return
    table = Table(title="Environments")
    table.add_column("name", style="bold")
    table.add_column("description")
    table.add_column("options")
    for r in rows:
        table.add_row(r["name"], r["description"], ", ".join(r["options"]))
    out.print(table)
    if all_tasks:
        out.print("reasoning_gym tasks (use as reasoning_gym:<task>):")
        out.print(", ".join(extra["reasoning_gym_tasks"]))


@envs_app.command("sample")
def sample_cmd(
    spec: str = typer.Argument(..., help="Environment spec, e.g. arithmetic or arithmetic:digits=2."),
    n: int = typer.Option(3, "-n", min=1, help="How many tasks."),
    split: str = typer.Option("train", "--split", help="train or eval."),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = JsonOption,
) -> None:
    """Print tasks (prompt and reference) exactly as the agent sees them."""
    env = _load(spec)
    if split not in ("train", "eval"):
        fail(f"--split must be train or eval, got {split!r}")
    try:
        tasks = env.sample(n, split=split, seed=seed)  # type: ignore[arg-type]
    except RuntimeError as e:
        fail(str(e))
    if as_json:
        print_json([t.model_dump() for t in tasks] if n > 1 else tasks[0].model_dump())
        return
    for t in tasks:
        out.rule(escape(f"{t.id}  [{t.split}]  difficulty {t.difficulty:g}"))  # [eval] is text, not Rich markup
        for m in t.prompt:
            out.print(f"[bold]{m.role}:[/] {m.content}", highlight=False)
        out.print(f"[dim]reference: {json.dumps(t.reference)}[/]", highlight=False)


@envs_app.command("check")
def check_cmd(
    spec: str = typer.Argument(..., help="Environment spec."),
    answer_file: Path = typer.Argument(..., help="File with the model's full response text ('-' for stdin)."),
    task_file: Path | None = typer.Option(None, "--task", help="Task JSON from `envs sample --json` (default: first sampled task)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the default task."),
    as_json: bool = JsonOption,
) -> None:
    """Verify a response against a task, as the agent's verify node would."""
    from environments import Task

    env = _load(spec)
    if str(answer_file) == "-":
        text = typer.get_text_stream("stdin").read()
    elif not answer_file.exists():
        fail(f"answer file {answer_file} does not exist")
    else:
        text = answer_file.read_text()
    if task_file is not None:
        try:
            raw = json.loads(task_file.read_text())
            task = Task.model_validate(raw[0] if isinstance(raw, list) else raw)
        except (OSError, ValueError) as e:
            fail(f"could not read a task from {task_file}: {e}")
    else:
        try:
            task = env.sample(1, seed=seed)[0]
        except RuntimeError as e:
            fail(str(e))
    try:
        feedback = env.verify(task, text)
    except Exception as e:  # noqa: BLE001 - the env's own check is broken: say so in one line, exit 2
        fail(f"environment {env.spec!r}: its check() raised {type(e).__name__}: {e} (a bug in the environment, "
             f"{type(env).__module__}; not the answer's fault)")
    if as_json:
        print_json({"task_id": task.id, **feedback.model_dump()})
        return
    status = "[green]correct[/]" if feedback.success else "[red]wrong[/]"
    out.print(f"{task.question}\n{status}  reward={feedback.reward:g}  answer={feedback.answer!r}\n{feedback.message}")
    raise typer.Exit(0 if feedback.success else 1)
