"""The serving engine: version switching under concurrency, and HTTP requests sharing the batcher.

The batching test runs a tiny random Llama through the real transformers backend (micro-batcher and
all) behind the live server: concurrent OpenAI-client requests must be merged into shared batches,
and greedy answers must not depend on whether they were batched.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import openai
import pytest

from agent.policy.base import Completion, Policy, SamplingParams, parse_model_spec
from agent.serve import ServeConfig, create_app
from agent.serve.engine import VersionGate
from memory import ExperienceLibrary
from tests.daemon_scripted import HashEmbedder
from tests.serve_scripted import live_server


class SlowPolicy(Policy):
    def __init__(self) -> None:
        self.spec = parse_model_spec("python:x:y")
        self.version = "A"
        self.log: list[str] = []

    def set_adapter(self, version: str, adapter_path: str | None) -> None:
        self.log.append(f"switch {version}")
        self.version = version

    async def generate(self, chats, params: SamplingParams) -> list[Completion]:
        version = self.version
        await asyncio.sleep(0.05)
        assert self.version == version, "the version changed while a request of it was running"
        self.log.append(f"done {version}")
        return [Completion(text=version, prompt_tokens=1, completion_tokens=1, model_version=version)]


async def test_version_gate_drains_before_switching_and_never_starves_a_switch():
    policy = SlowPolicy()
    gate = VersionGate(policy)

    async def ask(version: str, after: float) -> str:
        await asyncio.sleep(after)
        async with gate.use(version, None):
            return (await policy.generate([[]], SamplingParams()))[0].text

    results = await asyncio.gather(ask("A", 0), ask("A", 0), ask("B", 0.01), ask("A", 0.02), ask("B", 0.03))
    assert results == ["A", "A", "B", "A", "B"]
    # The two early A requests finish, then B switches (the late A queues behind it), then the rest.
    assert policy.log[:4] == ["done A", "done A", "switch B", "done B"]
    assert policy.log.count("switch B") + policy.log.count("switch A") <= 3


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainer.models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("serve-tiny"))


def test_concurrent_requests_share_the_engines_batches(tmp_path: Path, tiny_model: Path):
    with ExperienceLibrary(tmp_path / "ws", embedder=HashEmbedder()) as lib:
        config = ServeConfig(workspace=tmp_path / "ws", model=f"hf:{tiny_model}", window_ms=100, max_batch_size=32)
        app = create_app(config, library=lib)
        batcher = app.state.serve.policy.batcher
        questions = [f"What is {i} + {2 * i}? Answer briefly." + " Please." * (i % 3) for i in range(8)]

        async def ask(client: openai.AsyncOpenAI, q: str) -> str:
            r = await client.chat.completions.create(model="selfevolve", messages=[{"role": "user", "content": q}],
                                                     temperature=0, max_tokens=8)
            return r.choices[0].message.content

        with live_server(app) as url:
            async def main() -> tuple[list[str], list[str]]:
                client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
                together = await asyncio.gather(*(ask(client, q) for q in questions))
                before = batcher.stats.batches
                alone = [await ask(client, q) for q in questions]
                assert batcher.stats.batches - before == len(questions)  # one at a time: one batch each
                return together, alone

            together, alone = asyncio.run(main())
        sizes = batcher.stats.batch_sizes[: -len(questions)]
        assert max(sizes) >= 2 and len(sizes) < len(questions), f"concurrent requests were not merged: {sizes}"
        assert together == alone  # greedy output does not depend on batching
