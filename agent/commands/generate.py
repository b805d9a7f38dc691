"""``selfevolve generate``: one completion from any model spec, to try a backend or an adapter by hand.

    selfevolve generate "What is 2+3?"
    selfevolve generate "What is 2+3?" --model hf:/models/sft --adapter runs/v3/adapter --json
    selfevolve generate "Say hi" --model openai:http://localhost:8000/v1#SmolLM2 --temperature 0.7 --seed 1
    echo "What is 2+3?" | selfevolve generate -
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import typer
from rich.markup import escape

from agent.commands.common import JsonOption, console, fail, out, print_json


def register(app: typer.Typer) -> None:
    app.command("generate")(generate_cmd)


def generate_cmd(
    prompt: str = typer.Argument(..., help="The user message ('-' reads it from stdin)."),
    model: str = typer.Option(
        "default", "--model", "-m", help="Model spec: default | hf:<dir> | openai:<url>#<model> | vllm:<dir>."
    ),
    max_tokens: int = typer.Option(256, "--max-tokens", min=1, help="Max new tokens."),
    temperature: float = typer.Option(0.0, "--temperature", "-t", min=0.0, help="Sampling temperature (0 = greedy)."),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0, help="Nucleus sampling mass."),
    seed: int | None = typer.Option(None, "--seed", help="Sampling seed (reproducible samples)."),
    stop: list[str] | None = typer.Option(None, "--stop", help="Stop string (repeatable)."),
    system: str | None = typer.Option(None, "--system", help="System prompt (default: none)."),
    adapter: str | None = typer.Option(None, "--adapter", help="PEFT LoRA adapter dir (openai: a served adapter name)."),
    version: str | None = typer.Option(
        None, "--version", help="Version label to serve (default: the adapter's name, or 'base' without one)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Generate one completion for PROMPT and print it."""
    from agent.policy import SamplingParams

    if prompt == "-":
        prompt = sys.stdin.read().strip()
    if not prompt:
        fail("the prompt is empty; pass the user message as the argument (or '-' to read stdin)")
    try:
        params = SamplingParams(
            max_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=tuple(stop or ()), seed=seed
        )
    except ValueError as e:
        fail(escape(str(e)))
    chat = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    # openai: the adapter is a served model name, and the version maps to it; otherwise a dir's name.
    label = version or "base"
    if adapter and not version:
        label = adapter if model.startswith("openai:") else Path(adapter.rstrip("/")).name
    completion, served = asyncio.run(_generate(model, adapter, label, chat, params))
    if as_json:
        print_json(
            {
                "text": completion.text,
                "prompt_tokens": completion.prompt_tokens,
                "completion_tokens": completion.completion_tokens,
                "finish_reason": completion.finish_reason,
                "model": served,
                "model_version": completion.model_version,
                "latency_s": round(completion.latency_s, 3),
            }
        )
    else:
        out.print(completion.text, markup=False, highlight=False)


async def _generate(model: str, adapter: str | None, version: str, chat: list[dict[str, str]], params):
    """Load the policy, generate, close; every expected failure becomes one error line."""
    from agent.policy import load_policy
    from agent.policy.openai_backend import OpenAIBackendError
    from trainer.models import ModelNotFoundError

    try:
        with console.status(f"loading {model}..."):
            policy = load_policy(model, adapter_path=adapter, version=version)
    except (ValueError, ModelNotFoundError, FileNotFoundError, ImportError, OSError) as e:
        fail(escape(str(e)))
    try:
        with console.status("generating..."):
            [completion] = await policy.generate([chat], params)
    except (OpenAIBackendError, ValueError) as e:
        fail(escape(str(e)))
    finally:
        await policy.aclose()
    return completion, str(policy.spec)
