"""The ``selfevolve`` command line.

Each area registers its commands from its own module under :mod:`agent.commands`, so the CLI stays
a thin index: ``envs``, ``generate``, ``run``, ``memory``, ``train``, ``eval``, ``models``.

    selfevolve --help
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")  # chromadb
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import typer  # noqa: E402

from agent.commands import daemon, engine, envs, evaluate, generate, memory, run, serve, train  # noqa: E402

app = typer.Typer(
    name="selfevolve",
    help="An LLM agent that improves itself from its own experience.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

for module in (envs, generate, run, evaluate, memory, train, daemon, engine, serve):
    module.register(app)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
