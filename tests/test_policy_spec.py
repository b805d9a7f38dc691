"""Model spec strings and load_policy's errors; the vllm backend's import guard."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from agent.policy import ModelSpec, load_policy, parse_model_spec
from trainer.models import ModelNotFoundError

HAS_VLLM = importlib.util.find_spec("vllm") is not None


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("default", ModelSpec("transformers", "default")),
        ("hf:/models/x", ModelSpec("transformers", "/models/x")),
        ("openai:http://h:8000/v1/#m/n", ModelSpec("openai", "http://h:8000/v1", "m/n")),
        ("vllm:/models/x", ModelSpec("vllm", "/models/x")),
    ],
)
def test_specs_round_trip(spec: str, parsed: ModelSpec) -> None:
    assert parse_model_spec(spec) == parsed
    assert parse_model_spec(str(parsed)) == parsed


@pytest.mark.parametrize("spec", ["", "gpt-4", "hf:", "openai:http://h/v1", "openai:h/v1#m", "ollama:llama3"])
def test_bad_spec_lists_the_accepted_forms(spec: str) -> None:
    with pytest.raises(ValueError, match="bad model spec") as info:
        load_policy(spec)
    assert "openai:<base_url>#<model>" in str(info.value)


def test_missing_local_dir_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist.*'default'"):
        load_policy(f"hf:{tmp_path / 'nope'}")
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load_policy(f"hf:{tmp_path}")


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed; the missing-extra error cannot happen")
def test_vllm_without_the_extra_says_how_to_install() -> None:
    with pytest.raises(ImportError, match=r"pip install 'selfevolve\[vllm\]'"):
        load_policy("vllm:/models/x")


@pytest.mark.skipif(not HAS_VLLM, reason="needs the vllm extra and a GPU: pip install 'selfevolve[vllm]'")
def test_vllm_backend_imports() -> None:
    from agent.policy.vllm_backend import VLLMPolicy, import_vllm

    assert import_vllm() is not None and VLLMPolicy.generate is not None


async def test_python_plugin_spec_loads_a_user_policy():
    from agent.policy import Policy, SamplingParams, load_policy

    policy = load_policy("python:tests.scripted:echo_policy", version="v7")
    assert isinstance(policy, Policy) and policy.version == "v7"
    [out] = await policy.generate([[{"role": "user", "content": "hi"}]], SamplingParams(max_tokens=4))
    assert out.text == "<answer>0</answer>"


def test_python_plugin_spec_errors():
    from agent.policy import load_policy, parse_model_spec

    assert str(parse_model_spec("python:pkg.mod:make")) == "python:pkg.mod:make"
    with pytest.raises(ValueError, match="python:<module>:<factory>"):
        parse_model_spec("python:nocolon")
    with pytest.raises(ValueError, match="cannot load policy factory"):
        load_policy("python:tests.no_such_module:make")
    with pytest.raises(TypeError, match="not an agent.policy.Policy"):
        load_policy("python:tests.scripted:not_a_policy")
