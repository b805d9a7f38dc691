"""A scripted policy for graph-logic tests: answers according to a rule, never a real model."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from agent import prompts
from agent.policy.base import Chat, Completion, Policy, SamplingParams, parse_model_spec


def node_of(chat: Chat) -> str:
    last = chat[-1]["content"]
    if last == prompts.CRITIQUE:
        return "critique"
    if last.startswith("You tried to solve the problem above and failed."):
        return "reflect"
    if last.startswith("Now try again") or "What to do differently: " in last:
        return "retry"
    return "solve"


class ScriptedPolicy(Policy):
    """Calls ``rule(node, chat) -> text`` for every chat; records every call."""

    def __init__(self, rule: Callable[[str, Chat], str], delay: float = 0.0):
        self.spec = parse_model_spec("default")
        self.rule = rule
        self.delay = delay
        self.calls: list[tuple[str, Chat]] = []
        self.batches: list[int] = []

    async def generate(self, chats: list[Chat], params: SamplingParams) -> list[Completion]:
        self.batches.append(len(chats))
        if self.delay:
            await asyncio.sleep(self.delay)
        out = []
        for chat in chats:
            node = node_of(chat)
            self.calls.append((node, chat))
            for _ in range(params.n):
                text = self.rule(node, chat)
                out.append(Completion(text=text, prompt_tokens=len(str(chat)) // 4, completion_tokens=len(text) // 4,
                                      model_version=self.version))
        return out


def wrong_then_right(task_value: Callable[[Chat], int]) -> Callable[[str, Chat], str]:
    """First answer wrong, reflection, retry right; critique always claims CORRECT."""

    def rule(node: str, chat: Chat) -> str:
        value = task_value(chat)
        if node == "solve":
            return f"<answer>{value + 1}</answer>"
        if node == "critique":
            return "VERDICT: CORRECT it looks right"
        if node == "reflect":
            return "I added one too many; I should add carefully."
        return f"<answer>{value}</answer>"

    return rule


def echo_policy(version: str = "base", adapter_path: str | None = None) -> ScriptedPolicy:
    """A ``python:tests.scripted:echo_policy`` plug-in: answers every node with ``<answer>0</answer>``."""
    policy = ScriptedPolicy(lambda node, chat: "<answer>0</answer>")
    policy.version = version
    return policy


def not_a_policy(**_: object) -> dict:
    return {}
