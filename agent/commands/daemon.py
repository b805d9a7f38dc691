"""``selfevolve daemon|status|stop``: the autonomous self-improvement loop and its controls.

    selfevolve daemon --workspace ws --config docker/daemon.toml
    selfevolve status --workspace ws --json
    selfevolve stop --workspace ws
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import typer
from rich.table import Table

from agent.commands.common import (
    JsonOption,
    WorkspaceOption,
    console,
    fail,
    out,
    print_json,
    workspace_path,
    writable_workspace,
)


def register(app: typer.Typer) -> None:
    app.command("daemon")(daemon_cmd)
    app.command("status")(status_cmd)
    app.command("stop")(stop_cmd)


def daemon_cmd(
    workspace: Path | None = WorkspaceOption,
    config: Path = typer.Option(..., "--config", "-c", help="Daemon config (TOML); see docker/daemon.toml."),
    verbose: bool = typer.Option(True, "--verbose/--quiet", help="Log each event to stderr."),
) -> None:
    """Run the self-improvement loop in the foreground until stopped (SIGTERM/SIGINT or `selfevolve stop`)."""
    from agent.daemon.config import ConfigError, load_config
    from agent.daemon.control import DaemonAlreadyRunning
    from agent.daemon.loop import run_daemon
    from agent.daemon.preflight import check_training

    try:
        cfg = load_config(config)
        check_training(cfg)  # before the workspace exists and before the first cycle
    except ConfigError as e:
        fail(str(e))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    with writable_workspace(workspace) as ws:
        try:
            reason = run_daemon(ws, cfg)
        except (DaemonAlreadyRunning, ConfigError) as e:
            fail(str(e))
    console.print(f"daemon stopped: {reason}")


def status_cmd(workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Show the daemon's state: version served, cycles, episodes/hour, accuracy per version, gate, monitors, budgets."""
    from agent.daemon import control

    ws = workspace_path(workspace)
    if not ws.is_dir():
        fail(f"no workspace at {ws}: check --workspace (a daemon creates it with `selfevolve daemon --workspace {ws} "
             "--config FILE`)")
    state = control.read_state(ws)
    if state is None:
        if as_json:  # scripts polling --json get an answer, not an empty stdout
            print_json({"workspace": str(ws), "running": False, "status": "never run"})
        fail(f"no daemon has run in workspace {ws}: start one with `selfevolve daemon --workspace {ws} --config FILE`", 1)
    running = control.lock_held(ws)
    hours = max(state.get("wall_time_s", 0.0), 1e-9) / 3600
    report = {
        "workspace": str(ws), "running": running, "pid": control.read_pid(ws) if running else None,
        "status": "running" if running else state.get("status"), "stop_reason": state.get("stop_reason"),
        "serving_version": state.get("serving_version"), "cycles_completed": state.get("cycles_completed"),
        "phase": (state.get("current") or {}).get("phase"), "totals": state.get("totals"),
        "episodes_per_hour": state.get("totals", {}).get("episodes", 0) / hours,
        "accuracy_by_version": state.get("accuracy_by_version"), "last_training": state.get("last_training"),
        "last_gate": state.get("last_gate"), "monitors": state.get("monitors"),
        "training_halted": state.get("training_halted"), "training_refused": state.get("training_refused"),
        "budget": state.get("budget"), "stop_requested": control.stop_requested(ws),
        "last_crash": state.get("last_crash"),
        "updated": control.state_path(ws).stat().st_mtime,
    }
    if not running and state.get("status") == "running":
        report["status"] = "dead (killed or crashed; restart it to resume)"
    if as_json:
        print_json(report)
        return
    _print_status(report)


def stop_cmd(workspace: Path | None = WorkspaceOption) -> None:
    """Ask the workspace's daemon to stop after its current step (stop request + SIGTERM)."""
    from agent.daemon import control

    ws = workspace_path(workspace)
    if not ws.is_dir():
        fail(f"no workspace at {ws}: nothing to stop (check --workspace)")
    done = control.request_stop(ws)
    if done["signalled"]:
        console.print(f"sent SIGTERM to daemon pid {done['pid']}; it stops after its current step")
    elif done["running"]:
        console.print("stop requested; the daemon checks for it between steps")
    else:
        console.print("no daemon is running on this workspace; the stop request will be cleared on the next start")


def _fmt(x: object) -> str:
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def _print_status(r: dict) -> None:
    table = Table(title=f"daemon — {r['workspace']}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("status", f"{r['status']}" + (f" (pid {r['pid']})" if r["pid"] else ""))
    if r["stop_reason"]:
        table.add_row("stop reason", r["stop_reason"])
    if r.get("last_crash"):
        c = r["last_crash"]
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(c["at"]))
        table.add_row("last crash", f"[red]{c['error']}[/] (phase {c.get('phase') or '-'}, {when}; "
                      "traceback in daemon/log.jsonl, event crashed; restart to resume)")
    table.add_row("serving version", str(r["serving_version"]))
    table.add_row("cycles completed", f"{r['cycles_completed']} (in progress: {r['phase'] or '-'})")
    t = r["totals"] or {}
    table.add_row("episodes", f"{t.get('episodes', 0)} ({r['episodes_per_hour']:.0f}/hour)")
    table.add_row("trainings / steps", f"{t.get('trainings', 0)} / {t.get('training_steps', 0)}")
    for vid, acc in (r["accuracy_by_version"] or {}).items():
        table.add_row(f"held-out {vid}", f"first {acc['first']:.1%}  final {acc['final']:.1%}  (n={acc['n']})")
    if r["last_training"]:
        lt = r["last_training"]
        table.add_row("last training", f"{lt['version']} ({lt['method']}, {lt['steps']} steps, "
                      f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(lt['at']))})")
    if r["last_gate"]:
        g = r["last_gate"]
        table.add_row("last gate", ("PROMOTED: " if g["promote"] else "kept current: ") + g["reason"])
    if r["monitors"]:
        table.add_row("monitors", "  ".join(f"{k}={_fmt(v)}" for k, v in r["monitors"].items()))
    for key in ("training_halted", "training_refused"):
        if r[key]:
            table.add_row(key.replace("_", " "), f"[red]{r[key]}[/]")
    for key, (used, limit) in (r["budget"] or {}).items():
        table.add_row(f"budget {key}", f"{used} / {limit if limit is not None else '∞'}")
    out.print(table)
