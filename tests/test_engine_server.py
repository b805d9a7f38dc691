"""The OpenAI-compatible backend against a real `vllm serve` on 127.0.0.1 (CPU), base and a LoRA version.

`selfevolve engine start`'s launcher starts the server on a tiny random model with one LoRA module;
episodes run through the project's OpenAIPolicy; the served base gives the in-process engine's greedy
tokens, the LoRA-served version differs from the base. Skipped only where vLLM is not installed.
"""

from __future__ import annotations

import pytest

from agent.graph import EpisodeConfig, GraphDeps
from agent.policy import SamplingParams, load_policy
from agent.policy.vllm_engine import INSTALL_HINT, vllm_available
from agent.runner import run_episodes
from environments import get_environment

# Slow: `vllm serve` (a multiprocess engine) takes 60-215 s to answer on this shared 2-core box. The
# in-process vLLM path is in the default suite (tests/test_policy_vllm.py, tests/test_trainer_engine.py).
pytestmark = [pytest.mark.skipif(not vllm_available(), reason=f"vLLM is not installed: {INSTALL_HINT}"),
              pytest.mark.slow]
pytest_plugins = ["tests.vllm_factories"]

# With a system turn: the server renders chats with the model's own template, which (SmolLM2's) injects a
# default system prompt when none is given; our chat_prompt never does. The graph always sends one.
CHATS = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
         [{"role": "system", "content": ""}, {"role": "user", "content": "What is 2+3?"}]]


@pytest.fixture(scope="module")
def server(tiny_dir, adapter_dir, tmp_path_factory):
    import time

    from agent.policy import engine_server

    start = time.monotonic()
    state = tmp_path_factory.mktemp("engine") / "engine.json"
    info = engine_server.start(str(tiny_dir), loras={"v1": str(adapter_dir)}, state=state, dtype="float32",
                               timeout_s=600)
    print(f"vllm serve answered after {time.monotonic() - start:.1f} s")
    yield info, state
    assert engine_server.stop(state) and not engine_server.alive(info.pid)


async def test_episodes_and_a_lora_version_through_the_openai_backend(server, tiny_dir):
    info, state = server
    policy = load_policy(f"openai:{info.base_url}#{info.model}", max_tries=2)
    params = SamplingParams(max_tokens=6)
    base = await policy.generate(CHATS, params)
    local = load_policy(f"vllm:{tiny_dir}", dtype="float32", lora_mode="merged")
    assert [c.text for c in base] == [c.text for c in await local.generate(CHATS, params)]
    assert all(c.completion_tokens == 6 and c.finish_reason == "length" for c in base)

    policy.set_adapter("v1", "served")  # the server serves the adapter under the version's name
    tuned = await policy.generate(CHATS, params)
    assert [c.text for c in tuned] != [c.text for c in base] and all(c.model_version == "v1" for c in tuned)

    env = get_environment("arithmetic")
    config = EpisodeConfig(retrieval=False, record=False, solve_tokens=8, critique_tokens=4, reflect_tokens=8)
    episodes, summary = await run_episodes(env.sample(4, seed=1), GraphDeps(policy, env, config), concurrency=4)
    assert summary.episodes == 4 and not summary.errors
    assert all(a.solve.output is not None for ep in episodes for a in ep.attempts)
    await policy.aclose()


def test_engine_spec_attaches_to_the_recorded_server(server, monkeypatch):
    from agent.policy import engine_server

    info, state = server
    monkeypatch.setattr(engine_server, "state_file", lambda: state)
    assert engine_server.attach_spec() == f"openai:{info.base_url}#{info.model}"
    assert load_policy("engine").spec.path == info.base_url
    monkeypatch.setattr(engine_server, "state_file", lambda: state.with_name("none.json"))
    with pytest.raises(ValueError, match="selfevolve engine start"):
        load_policy("engine")
