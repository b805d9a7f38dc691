"""The daemon over a ``pool:`` of servers when an adapter push fails: nothing is recorded as serving a version
the servers do not all have (real HTTP servers from tests/pool_fakes.py, scripted daemon plug-ins)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agent.daemon import control
from agent.daemon.config import parse_config
from agent.daemon.loop import Daemon
from agent.policy.pool_backend import AdapterPushError
from tests.daemon_scripted import DaemonScriptedPolicy, HashEmbedder
from tests.pool_fakes import fake_servers


def config(model: str):
    return parse_config({
        "model": model, "embedder": "python:tests.daemon_scripted:HashEmbedder", "tensorboard": False,
        "episodes_per_cycle": 4, "concurrency": 4, "environments": [{"spec": "arithmetic:digits=1"}],
        "training": {"trainer": "python:tests.daemon_scripted:fake_train", "method": "sft", "steps": 1,
                     "min_new_failures": 1},
        "gate": {"eval_size": 8, "primary": "first"}, "monitors": {"tasks": 1, "k": 2}, "budgets": {"cycles": 1},
    })


def versions(ws: Path) -> dict:
    from memory.library import ExperienceLibrary

    with ExperienceLibrary(ws, embedder=HashEmbedder()) as lib:
        return {"serving": lib.serving_version().id, **{v.id: v for v in lib.list_model_versions()}}


def events(ws: Path) -> list[dict]:
    return [json.loads(line) for line in control.log_path(ws).read_text().splitlines()]


def test_a_refused_push_of_the_candidate_promotes_nothing_and_a_restart_retries(tmp_path: Path) -> None:
    with fake_servers(2) as (a, b):
        cfg = config(f"pool:{a.base_url},{b.base_url}#base-model")
        b.refuse_load = "LoRA rank 256 is greater than max_lora_rank 64"
        with pytest.raises(AdapterPushError, match=b.base_url):
            asyncio.run(Daemon(tmp_path, cfg).run())
        state = control.read_state(tmp_path)
        assert state["status"] == "crashed" and "max_lora_rank 64" in state["last_crash"]["error"]
        assert state["current"]["phase"] == "gate" and state["serving_version"] == "base"
        candidate = state["current"]["candidate"]
        v = versions(tmp_path)
        assert v["serving"] == "base" and v[candidate].status == "candidate"
        assert a.loaded == {} and a.routes("/v1/unload_lora_adapter") == [{"lora_name": candidate}]
        assert set(a.answered) == set(b.answered) == {"base-model"}  # the candidate was never requested

        b.refuse_load = None  # the server is fixed: a restart resumes the gate, and the push goes through
        assert asyncio.run(Daemon(tmp_path, cfg).run()) == "budget: cycles 1 >= 1"
        v = versions(tmp_path)
        assert a.loaded == b.loaded == {candidate: v[candidate].adapter_path}
        assert control.read_state(tmp_path)["serving_version"] == v["serving"]
        assert candidate in set(a.answered) | set(b.answered)  # the held-out evaluation ran on it


class RefusesAfterEvaluation(DaemonScriptedPolicy):
    """Serves a version's adapter once (the gate's evaluation), then refuses it (a server lost it for good)."""

    def set_adapter(self, version: str, adapter_path: str | None) -> None:
        if adapter_path is not None and any(v == version for v, _ in self.adapters):
            raise RuntimeError(f"every server refused adapter {version}")
        super().set_adapter(version, adapter_path)


def refusing_policy(version: str = "base", adapter_path: str | None = None) -> RefusesAfterEvaluation:
    return RefusesAfterEvaluation(version, adapter_path)


def test_a_promotion_the_policy_cannot_serve_is_undone(tmp_path: Path) -> None:
    assert asyncio.run(Daemon(tmp_path, config("python:tests.test_daemon_pool:refusing_policy")).run()) \
        == "budget: cycles 1 >= 1"
    state = control.read_state(tmp_path)
    gate = state["last_gate"]
    candidate = gate["candidate"]
    assert gate["decision"]["promote"] and not gate["promote"]  # it won the gate, but could not be served
    assert gate["promotion_undone"] == f"RuntimeError: every server refused adapter {candidate}"
    v = versions(tmp_path)
    assert v["serving"] == "base" == state["serving_version"] and v[candidate].status == "retired"
    [undone] = [e for e in events(tmp_path) if e["event"] == "promotion_undone"]
    assert undone["version"] == candidate and undone["serving"] == "base"


def test_selfevolve_serve_over_a_pool_pushes_a_requested_version_or_says_which_server_refused(tmp_path: Path) -> None:
    import httpx

    from agent.serve import ServeConfig, create_app
    from memory.library import ExperienceLibrary
    from tests.serve_scripted import live_server, register_adapter_version

    ws = tmp_path / "ws"
    with fake_servers(2) as (a, b), ExperienceLibrary(ws, embedder=HashEmbedder()) as lib:
        mv = register_adapter_version(lib, ws, promote=False)
        app = create_app(ServeConfig(workspace=ws, model=f"pool:{a.base_url},{b.base_url}#base-model"), library=lib)
        body = {"model": f"selfevolve@{mv.id}", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        with live_server(app) as url:
            b.refuse_load = "out of LoRA slots"
            r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
            assert r.status_code == 503 and b.base_url in r.json()["error"]["message"]
            assert "out of LoRA slots" in r.json()["error"]["message"] and a.loaded == {}
            b.refuse_load = None
            r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
            assert r.status_code == 200, r.text
            assert f"|{mv.id}|hi" in r.json()["choices"][0]["message"]["content"]
        assert a.loaded == b.loaded == {mv.id: mv.adapter_path}
