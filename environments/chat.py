"""The one rule every model input follows: a chat starts with a system turn, empty when the task set none.

SmolLM2's chat template (and others) inject a default system prompt ("You are a helpful AI assistant
named SmolLM...") when a chat has none, so a chat rendered without this rule is not the chat the caller
wrote. The rule lives here, beside :class:`environments.Message`, because both sides that render chats
import environments and neither may import the other: the policy layer renders served prompts with it
(:func:`agent.policy.chat.chat_prompt`), and the trainer builds its datasets (which TRL renders) and the
R3 retry prompts with it (:mod:`trainer.datasets`, :mod:`trainer.rewards`). Same rule, same tokens.
"""

from __future__ import annotations

from collections.abc import Sequence


def with_system(messages: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """Copy of ``messages`` that starts with a system turn (empty if there was none).

    >>> with_system([{"role": "user", "content": "hi"}])[0]
    {'role': 'system', 'content': ''}
    >>> with_system([{"role": "system", "content": "Be brief."}]) == [{"role": "system", "content": "Be brief."}]
    True
    """
    msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
    if not msgs or msgs[0]["role"] != "system":
        msgs.insert(0, {"role": "system", "content": ""})
    return msgs
