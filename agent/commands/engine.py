"""``selfevolve engine start|status|stop``: one long-running vLLM server that short commands attach to.

Startup cost decision (docs/engines.md): long-running processes build their own in-process engine
once (``--model vllm:default``); short commands attach to this server with ``--model engine`` instead
of paying the engine's load each time.

    selfevolve engine start --lora v3=.selfevolve/models/v0003-sft/adapter
    selfevolve engine start --runtime-lora          # adapters pushed at run time (a pool: spec's promotions)
    selfevolve engine start --state /tmp/s2.json    # a second server (status/stop take --state too)
    selfevolve generate "What is 2+3?" --model engine
    selfevolve engine stop
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import typer

from agent.commands.common import JsonOption, console, fail, out, print_json

engine_app = typer.Typer(help="Start, inspect and stop the shared vLLM engine server.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(engine_app, name="engine")


StateOption = typer.Option(None, "--state", help="The server's state file (default: ~/.cache/selfevolve/engine.json); "
                           "one per server to run several. `--model engine` attaches to the default one.")


def _loras(pairs: list[str]) -> dict[str, str]:
    loras = {}
    for pair in pairs:
        name, eq, path = pair.partition("=")
        if not eq or not name or not path:
            fail(f"--lora {pair!r}: expected NAME=ADAPTER_DIR, e.g. --lora v3=ws/models/v0003-sft/adapter")
        loras[name] = path
    return loras


@engine_app.command("start")
def start_cmd(
    model: str = typer.Option("default", "--model", "-m", help="Base model: default (embedded) or a local HF dir."),
    port: int = typer.Option(0, "--port", help="Port on 127.0.0.1 (0 = a free one)."),
    lora: list[str] = typer.Option([], "--lora", help="Serve a version's adapter: NAME=ADAPTER_DIR (repeatable)."),
    timeout_s: float = typer.Option(600.0, "--timeout", help="Seconds to wait for the server to answer."),
    runtime_lora: bool = typer.Option(False, "--runtime-lora", help="Enable LoRA and vLLM's runtime adapter API "
                                      "(POST /v1/load_lora_adapter), so a pool: policy can push promoted versions."),
    state: Path | None = StateOption,
    as_json: bool = JsonOption,
) -> None:
    """Start `vllm serve` on 127.0.0.1 in the background (or report the one already running)."""
    from agent.policy.engine_server import EngineServerError, start

    last = [0.0]

    def progress(elapsed: float) -> None:
        if elapsed - last[0] >= 10:
            last[0] = elapsed
            console.print(f"waiting for vllm serve to load the model… {elapsed:.0f} s")

    try:
        info = start(model if model == "default" else model.removeprefix("hf:"), port=port or None,
                     loras=_loras(lora), timeout_s=timeout_s, progress=progress, runtime_lora=runtime_lora,
                     state=state)
    except (EngineServerError, FileNotFoundError) as e:
        fail(str(e))
    if as_json:
        print_json(asdict(info))
        return
    out.print(f"engine server pid {info.pid} at {info.base_url} (model {info.model}"
              + (f", versions {', '.join(info.loras)}" if info.loras else "")
              + (", runtime adapter loading on" if info.runtime_lora else "") + "); attach with --model engine")


@engine_app.command("status")
def status_cmd(state: Path | None = StateOption, as_json: bool = JsonOption) -> None:
    """Whether the engine server runs and answers."""
    from agent.policy.engine_server import alive, read_info, ready

    info = read_info(state)
    running = info is not None and alive(info.pid)
    answering = running and ready(info.base_url)
    report = {"running": running, "answering": answering, **(asdict(info) if info else {})}
    if running and info is not None:
        report["uptime_s"] = round(time.time() - info.started, 1)
    if as_json:
        print_json(report)
    elif not running:
        out.print("no engine server is running (start one with `selfevolve engine start`)")
    else:
        out.print(f"engine server pid {info.pid} at {info.base_url}: {'answering' if answering else 'loading'}, "
                  f"up {report['uptime_s']} s, log {info.log}")
    if not answering:
        raise typer.Exit(1)


@engine_app.command("stop")
def stop_cmd(state: Path | None = StateOption, as_json: bool = JsonOption) -> None:
    """Stop the engine server started by `selfevolve engine start`."""
    from agent.policy.engine_server import stop

    stopped = stop(state)
    if as_json:
        print_json({"stopped": stopped})
    else:
        out.print("engine server stopped" if stopped else "no engine server was recorded")
