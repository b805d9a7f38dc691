"""The pool against a real `vllm serve` on 127.0.0.1 (CPU) that takes LoRA adapters at run time.

`selfevolve engine start --runtime-lora`'s launcher starts the server on a tiny random model with no
adapter; the pool pushes a real PEFT adapter through ``POST /v1/load_lora_adapter``, the served name then
answers differently from the base; a push vLLM refuses names the server and keeps the old version; a push
that a second (dead) server misses is unloaded from the real one. Slow (the server takes 1-4 minutes to
answer on this shared 2-core box); skipped where vLLM is not installed.
"""

from __future__ import annotations

import httpx
import pytest

from agent.policy import SamplingParams, load_policy
from agent.policy.engine_server import free_port
from agent.policy.pool_backend import AdapterPushError
from agent.policy.vllm_engine import INSTALL_HINT, vllm_available

pytestmark = [pytest.mark.skipif(not vllm_available(), reason=f"vLLM is not installed: {INSTALL_HINT}"),
              pytest.mark.slow]
pytest_plugins = ["tests.vllm_factories"]

CHATS = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
         [{"role": "system", "content": ""}, {"role": "user", "content": "What is 2+3?"}]]
PARAMS = SamplingParams(max_tokens=6)


@pytest.fixture(scope="module")
def server(tiny_dir, tmp_path_factory):
    from agent.policy import engine_server

    state = tmp_path_factory.mktemp("engine") / "engine.json"
    info = engine_server.start(str(tiny_dir), state=state, dtype="float32", timeout_s=600, runtime_lora=True)
    assert info.runtime_lora and not info.loras
    yield info
    assert engine_server.stop(state) and not engine_server.alive(info.pid)


def served(info) -> set[str]:
    return {m["id"] for m in httpx.get(f"{info.base_url}/models", timeout=10).json()["data"]}


async def test_a_pushed_adapter_answers_under_its_version_name(server, adapter_dir, tmp_path) -> None:
    pool = load_policy(f"pool:{server.base_url}#{server.model}")
    base = [c.text for c in await pool.generate(CHATS, PARAMS)]

    pool.set_adapter("v1", str(adapter_dir))
    assert "v1" in served(server) and pool.model == "v1"
    tuned = await pool.generate(CHATS, PARAMS)
    assert [c.text for c in tuned] != base and {c.model_version for c in tuned} == {"v1"}

    with pytest.raises(AdapterPushError) as info:  # vLLM refuses a directory that is not an adapter
        pool.set_adapter("v2", str(tmp_path / "no-such-adapter"))
    assert f"{server.base_url}/load_lora_adapter: HTTP 404: " in str(info.value) and "No adapter found" in str(info.value)
    assert pool.version == "v1" and "v2" not in served(server) and "VLLM_ALLOW_RUNTIME" not in str(info.value)
    assert [c.text for c in await pool.generate(CHATS, PARAMS)] == [c.text for c in tuned]

    pool.set_adapter("base", None)
    assert [c.text for c in await pool.generate(CHATS, PARAMS)] == base
    await pool.aclose()


async def test_a_push_another_server_misses_is_unloaded_from_the_real_one(server, adapter_dir) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    pool = load_policy(f"pool:{server.base_url},{dead}#{server.model}")
    with pytest.raises(AdapterPushError) as info:
        pool.set_adapter("v3", str(adapter_dir))
    assert f"{dead}: ConnectError" in str(info.value) and f"{server.base_url}: took it, unloaded again" in str(info.value)
    assert "v3" not in served(server) and pool.version == "base"
    await pool.aclose()
