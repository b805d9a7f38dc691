"""Scripted policies for the Ray tests (``python:tests.ray_scripted:faulty``): the daemon's arithmetic solver,
plus faults a test plants through the policy options (WorkerSpec.options reach the factory).

- ``block=TEXT, marker_dir=DIR``: the first solve of a task whose question contains TEXT writes the worker's
  actor name to ``DIR/started`` and then waits (up to ``block_s``) for ``DIR/release``, so a test can kill that
  worker truly mid-episode; a later try (the marker exists) answers at once.
- ``die_on=TEXT``: the worker process exits (``os._exit``) whenever it is asked to solve that task, on every try.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from agent.policy.base import Chat, Completion, SamplingParams
from tests.daemon_scripted import DaemonScriptedPolicy
from tests.scripted import node_of


class FaultyPolicy(DaemonScriptedPolicy):
    def __init__(self, version: str = "base", adapter_path: str | None = None, *, marker_dir: str | None = None,
                 block: str | None = None, die_on: str | None = None, block_s: float = 60.0) -> None:
        super().__init__(version, adapter_path)
        self.marker_dir = Path(marker_dir) if marker_dir else None
        self.block, self.die_on, self.block_s = block, die_on, block_s

    async def _fault(self, chat: Chat) -> None:
        question = next(m["content"] for m in chat if m["role"] == "user")
        if self.die_on and self.die_on in question:
            os._exit(17)  # a worker crash: no exception, no cleanup, the process is gone
        if not (self.block and self.block in question and self.marker_dir is not None):
            return
        started = self.marker_dir / "started"
        if started.exists():
            return  # a retry: answer normally
        import ray

        started.write_text(ray.get_runtime_context().get_actor_name() or "")
        deadline = time.monotonic() + self.block_s
        while not (self.marker_dir / "release").exists():
            if time.monotonic() > deadline:
                raise TimeoutError("blocked episode was never killed nor released")
            await asyncio.sleep(0.05)

    async def generate(self, chats: list[Chat], params: SamplingParams) -> list[Completion]:
        for chat in chats:
            if node_of(chat) == "solve":
                await self._fault(chat)
        return await super().generate(chats, params)


def faulty(version: str = "base", adapter_path: str | None = None, **options: object) -> FaultyPolicy:
    return FaultyPolicy(version, adapter_path, **options)  # type: ignore[arg-type]
