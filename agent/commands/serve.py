"""``selfevolve serve``: the evolving agent behind the OpenAI API, and its live dashboard at ``/``.

    selfevolve serve --workspace ws                          # http://127.0.0.1:8000 (dashboard), /v1 (API)
    SELFEVOLVE_API_KEY=secret selfevolve serve -w ws --host 0.0.0.0 --port 8000
    selfevolve serve -w ws --model hf:/models/base --max-tokens-limit 1024

Any OpenAI client works: ``OpenAI(base_url="http://127.0.0.1:8000/v1", api_key=KEY)``, model
``selfevolve``. See docs/serve.md.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.markup import escape

from agent.commands.common import WorkspaceOption, console, fail, resolve_workspace


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)


def serve_cmd(
    workspace: Path | None = WorkspaceOption,
    model: str = typer.Option("default", "--model", "-m", help="Base model spec: default | hf:<dir> | openai:<url>#<model> | vllm:<dir> | python:<module>:<factory>."),
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address (loopback by default; others need --api-key)."),
    port: int = typer.Option(8000, "--port", "-p", min=0, max=65535, help="TCP port."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="SELFEVOLVE_API_KEY", show_envvar=True,
                                       help="Bearer token clients must send."),
    max_tokens_limit: int = typer.Option(2048, "--max-tokens-limit", min=1, help="Largest max_tokens a request may ask for."),
    default_max_tokens: int | None = typer.Option(None, "--default-max-tokens", min=1,
                                                  help="max_tokens when a request gives none [default: 256, at most the limit]."),
    max_body_kb: int = typer.Option(1024, "--max-body-kb", min=1, help="Largest request body, in KiB."),
    embedder: str = typer.Option("default", "--embedder", help="'default' (MiniLM) or python:<module>:<factory>."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level (debug, info, warning, error)."),
    allow_no_key: bool = typer.Option(False, "--allow-no-key", help="Serve a non-loopback --host without an API key "
                                      "(only behind a proxy that authenticates)."),
) -> None:
    """Serve the agent's current model over the OpenAI API (following promotions) with a dashboard at /."""
    from agent.serve import ServeConfig

    ws = resolve_workspace(workspace)
    try:
        extra = {} if default_max_tokens is None else {"default_max_tokens": default_max_tokens}
        config = ServeConfig(workspace=ws, model=model, host=host, port=port, api_key=api_key,
                             max_tokens_limit=max_tokens_limit, max_body_bytes=max_body_kb * 1024, embedder=embedder,
                             **extra)
    except ValidationError as e:
        fail("; ".join(f"{'.'.join(map(str, err['loc'])) or 'config'}: {err['msg']}" for err in e.errors()))
    if not config.loopback and config.api_key is None and not allow_no_key:
        fail(f"--host {host} exposes the API beyond this machine without a key: pass --api-key KEY "
             "(or set SELFEVOLVE_API_KEY), or bind 127.0.0.1 (--allow-no-key if a proxy authenticates)")
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO), format="%(asctime)s %(name)s %(message)s")
    app = _build(config)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    console.print(f"serving [bold]{escape(model)}[/] (version {escape(app.state.serve.policy.version)}) on "
                  f"http://{shown}:{port}  — dashboard at /, OpenAI API at /v1 (model 'selfevolve')"
                  + ("" if config.api_key else "; no API key: anyone on this host may call it"))
    from agent.serve.app import run

    run(config, app, log_level=log_level)


def _build(config):
    """Load the library and the serving policy; expected failures become one error line."""
    from agent.policy.base import parse_model_spec
    from agent.serve.app import create_app
    from trainer.models import ModelNotFoundError, resolve_model_path

    try:
        spec = parse_model_spec(config.model)  # a typo fails before anything heavy is loaded
        if spec.backend == "transformers" and spec.path != "default":
            resolve_model_path(spec.path)
        with console.status(f"loading {config.model} and the workspace's serving version..."):
            return create_app(config)
    except (ValueError, KeyError, ModelNotFoundError, FileNotFoundError, ImportError, OSError) as e:
        fail(escape(str(e).strip("'\"")))
