"""Chat rendering for the policy backends that tokenize themselves (transformers, vLLM in-process).

The OpenAI-compatible backend sends the messages as they are and the server renders them. Rendering
here applies the one rule of :mod:`environments.chat` (an empty system turn when the chat has none), the
same rule the trainer's datasets follow, so a trained prompt and a served prompt are the same tokens.

    from agent.policy.chat import chat_prompt
    text = chat_prompt(tokenizer, [{"role": "user", "content": "What is 2+3?"}])
"""

from __future__ import annotations

from typing import Any

from environments.chat import with_system


def chat_prompt(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """Apply ``tokenizer``'s chat template to ``messages`` with the system-turn rule (never an injected default)."""
    return tokenizer.apply_chat_template(with_system(messages), tokenize=False, add_generation_prompt=add_generation_prompt)
