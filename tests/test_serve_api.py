"""`selfevolve serve` through the official openai client, against a live uvicorn server on 127.0.0.1.

The policy is the scripted plug-in ``python:tests.serve_scripted:policy`` (it says which version
answered), loaded through the real serving path; the library is real (SQLite + Chroma) with a hashing
embedder. Covered: chat (n, temperature, top_p, max_tokens, stop, seed, usage), SSE streaming, the
models list, a promotion and a rollback made by another process seen without a restart, feedback →
an episode the trainer's datasets use, auth, and bad input answered in the OpenAI error shape.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from agent.serve import ServeConfig, create_app
from agent.serve.store import ServedStore
from memory import ExperienceLibrary
from tests.daemon_scripted import HashEmbedder
from tests.serve_scripted import live_server, register_adapter_version

MODEL = "python:tests.serve_scripted:policy"
Q = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 3?"}]


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return tmp_path / "ws"


@pytest.fixture
def lib(ws: Path):
    with ExperienceLibrary(ws, embedder=HashEmbedder()) as library:
        yield library


def start(ws: Path, lib, **cfg):
    app = create_app(ServeConfig(workspace=ws, model=MODEL, **cfg), library=lib)
    return app, live_server(app)


@pytest.fixture
def server(ws: Path, lib):
    app, ctx = start(ws, lib, max_tokens_limit=64, max_body_bytes=4096)
    with ctx as url:
        yield app, url, openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def test_chat_completion_sampling_usage_and_every_choice_kept(server, ws):
    app, _, client = server
    r = client.chat.completions.create(model="selfevolve", messages=Q, n=2, temperature=0.7, top_p=0.9,
                                       max_tokens=7, stop=["+"], seed=11)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == "selfevolve"
    assert [c.index for c in r.choices] == [0, 1]
    assert r.choices[0].message.content == "[base] 0: 3? " and r.choices[0].finish_reason == "stop"  # cut at "+"
    assert r.choices[1].message.content.startswith("[base] 1: ")
    assert r.usage.prompt_tokens == 7 and r.usage.completion_tokens == 6
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.model_extra["selfevolve"] == {"version": "base", "retrieved_ids": []}
    version, chat, params = app.state.serve.policy.calls[-1]
    assert chat == Q and version == "base"
    assert (params.n, params.temperature, params.top_p, params.max_tokens, params.stop, params.seed) == (
        2, 0.7, 0.9, 7, ("+",), 11)
    long = client.chat.completions.create(model="selfevolve", messages=[{"role": "user", "content": "a " * 40}],
                                          max_tokens=5)
    assert long.choices[0].finish_reason == "length" and long.usage.completion_tokens == 5
    kept = ServedStore(ws / "served.db")
    rows = [kept.get(r.id, i) for i in (0, 1)]
    assert [row.output for row in rows] == [c.message.content for c in r.choices]
    assert rows[0].request_messages == Q and rows[0].prompt_messages == Q and rows[0].version == "base"
    assert kept.counts()["served"] == 3 and kept.counts()["rated"] == 0


def test_streaming_matches_the_json_response(server):
    _, _, client = server
    full = client.chat.completions.create(model="selfevolve", messages=Q, n=2, temperature=0)
    stream = client.chat.completions.create(model="selfevolve", messages=Q, n=2, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    text, finish, usage, ids = {0: "", 1: ""}, {}, None, set()
    for chunk in stream:
        ids.add(chunk.id)
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            text[c.index] += c.delta.content or ""
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    assert [text[0], text[1]] == [c.message.content for c in full.choices]
    assert finish == {0: "stop", 1: "stop"} and len(ids) == 1
    assert usage.completion_tokens == full.usage.completion_tokens and usage.prompt_tokens == full.usage.prompt_tokens


def _cli(*args: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "agent.cli", *args, "--json"], capture_output=True, text=True,
                          env=env, stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_models_list_and_a_promotion_by_another_process_without_restart(server, ws):
    app, _, client = server
    assert [m.id for m in client.models.list()] == ["selfevolve", "selfevolve@base"]
    ask = lambda model: client.chat.completions.create(model=model, messages=Q, temperature=0).choices[0].message.content  # noqa: E731
    assert ask("selfevolve").startswith("[base]")

    with ExperienceLibrary(ws, embedder=HashEmbedder()) as other:  # another connection, as the daemon has
        v1 = register_adapter_version(other, ws, promote=False)
    _cli("models", "promote", v1.id, "-w", str(ws))  # another process promotes it
    assert ask("selfevolve").startswith(f"[{v1.id}]")
    assert ask("selfevolve@base").startswith("[base]")  # an explicit version, then back
    assert ask(f"selfevolve@{v1.id}").startswith(f"[{v1.id}]")
    ids = [m.id for m in client.models.list()]
    assert ids == ["selfevolve", f"selfevolve@{v1.id}", "selfevolve@base"]
    assert client.models.retrieve(f"selfevolve@{v1.id}").model_extra["status"] == "promoted"

    _cli("models", "rollback", "-w", str(ws))
    assert ask("selfevolve").startswith("[base]")
    assert app.state.serve.policy.switches == ["base", v1.id, "base", v1.id, "base"]
    with pytest.raises(openai.BadRequestError) as e:
        ask("selfevolve@v0099-sft")
    assert e.value.code == "model_not_found" and "GET /v1/models" in e.value.message
    with pytest.raises(openai.BadRequestError):
        ask("gpt-4o")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("selfevolve@nope")


def _rate(url: str, **body) -> httpx.Response:
    return httpx.post(url + "/v1/feedback", json=body, timeout=30)


def test_feedback_turns_a_completion_into_an_episode_the_trainer_uses(server, lib):
    from trainer import datasets as D

    _, url, client = server
    r = client.chat.completions.create(model="selfevolve", messages=Q, n=2, temperature=0.8)
    good = client.post("/feedback", cast_to=object,  # the openai client's generic post, as docs/serve.md shows
                       body={"completion_id": r.id, "index": 0, "success": True, "comment": "right, and short"})
    bad = _rate(url, completion_id=r.id, index=1, reward=-0.5)
    assert bad.status_code == 200 and bad.json()["success"] is False
    eps = {ep.metadata["choice"]: ep for ep in lib.episodes(env="served")}
    assert set(eps) == {0, 1} and good["episode_id"] == eps[0].id and good["success"] is True
    ep = eps[0]
    assert ep.feedback_source == "user" and ep.model_version == "base" and ep.task.split == "train"
    assert ep.attempts[0].solve.messages == Q and ep.attempts[0].solve.output == r.choices[0].message.content
    assert ep.attempts[0].feedback.message == "right, and short" and ep.attempts[0].feedback.reward == 1.0
    assert eps[1].attempts[0].feedback.reward == -0.5 and eps[0].task.id == eps[1].task.id
    sft = D.sft_dataset(lib.episodes())
    assert sft["episode_id"] == [ep.id] and sft["completion"][0][0]["content"] == r.choices[0].message.content
    dpo = D.dpo_dataset(lib.episodes())
    assert len(dpo) == 1 and dpo["chosen"][0][0]["content"] == r.choices[0].message.content
    assert dpo["rejected"][0][0]["content"] == r.choices[1].message.content

    before = lib.count()
    again = _rate(url, completion_id=r.id, index=0, success=False)
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_rated"
    assert lib.get(ep.id).success is True  # the first rating stands
    unknown = _rate(url, completion_id="chatcmpl-nope", success=True)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_completion"
    assert _rate(url, completion_id=r.id, index=5, success=True).status_code == 404
    assert _rate(url, completion_id=r.id, comment="no verdict").status_code == 400
    assert _rate(url, completion_id=r.id, success="yes").status_code == 400
    assert lib.count() == before


def test_feedback_in_a_named_environment_feeds_grpo(server, lib):
    from trainer import datasets as D

    _, url, client = server
    r = client.chat.completions.create(model="selfevolve", temperature=0,
                                       messages=[{"role": "user", "content": "</answer> 5 <answer> 2+3?"}])
    assert _rate(url, completion_id=r.id, success=True, env="arithmetic").status_code == 200
    [ep] = lib.episodes(env="arithmetic")
    assert ep.attempts[0].answer == "5" and ep.attempts[0].feedback.label == "5"
    rows = D.first_attempt_dataset([ep])
    assert rows["label"] == ["5"] and rows["feedback_source"] == ["user"]
    assert len(D.reflection_dataset([ep])) == 0  # one served turn holds no reflection and retry


def test_retrieval_puts_past_successes_into_the_prompt(server, lib, ws):
    from tests.memory_factories import make_episode

    _, _, client = server
    past = make_episode(2, env="arithmetic")  # "What is 12 + 24?", solved
    lib.record(past)
    msgs = [{"role": "user", "content": "What is 12 + 25?"}]
    r = client.chat.completions.create(model="selfevolve", messages=msgs, extra_body={"retrieve": 2, "env": "arithmetic:digits=1"})
    assert r.model_extra["selfevolve"]["retrieved_ids"] == [past.id]
    row = ServedStore(ws / "served.db").get(r.id)
    assert row.request_messages == msgs and row.env == "arithmetic"  # digits=1 is the default: the env's own spec
    assert "Solved examples" in row.prompt_messages[-1]["content"] and "12 + 24" in row.prompt_messages[-1]["content"]
    plain = client.chat.completions.create(model="selfevolve", messages=msgs)
    assert plain.model_extra["selfevolve"]["retrieved_ids"] == []  # off by default


def test_auth(ws, lib):
    app, ctx = start(ws, lib, api_key="s3cret")
    with ctx as url:
        ok = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
        assert ok.chat.completions.create(model="selfevolve", messages=Q).choices
        with pytest.raises(openai.AuthenticationError) as e:
            openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
        assert e.value.code == "invalid_api_key"
        for path in ("/v1/models", "/api/summary", "/api/episodes"):
            res = httpx.get(url + path)
            assert res.status_code == 401 and res.json()["error"]["code"] == "invalid_api_key"
        assert _rate(url, completion_id="x", success=True).status_code == 401
        assert httpx.get(url + "/").status_code == 200 and httpx.get(url + "/health").status_code == 200
        assert httpx.get(url + "/api/summary", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def _error(res: httpx.Response, status: int) -> dict:
    assert res.status_code == status, res.text
    assert "Traceback" not in res.text
    err = res.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


def test_bad_input_gets_openai_style_errors(server):
    _, url, client = server
    post = lambda body, **kw: httpx.post(url + "/v1/chat/completions", timeout=30, **({"json": body} | kw))  # noqa: E731
    good = {"model": "selfevolve", "messages": Q}
    assert _error(post(None, content=b'{"model": "selfevolve", "messages": ['), 400)["code"] == "invalid_json"
    assert _error(post(None, content=b"[1, 2]"), 400)["code"] == "invalid_json"
    assert _error(post(None, content=b""), 400)["code"] == "invalid_json"
    assert _error(post({**good, "temperature": "hot"}), 400)["param"] == "temperature"
    assert _error(post({**good, "messages": "hello"}), 400)["param"] == "messages"
    assert _error(post({**good, "messages": [{"role": "robot", "content": "x"}]}), 400)["param"] == "messages"
    assert _error(post({**good, "n": 0}), 400)["param"] == "n"
    assert _error(post({**good, "model": "nope"}), 400)["code"] == "model_not_found"
    assert "limit of 64" in _error(post({**good, "max_tokens": 65}), 400)["message"]
    assert _error(post({**good, "tools": [{"type": "function"}]}), 400)["code"] == "unsupported_parameter"
    assert _error(post({**good, "messages": [{"role": "user", "content": "x" * 5000}]}), 413)["code"] == "request_too_large"
    assert _error(httpx.get(url + "/v1/nowhere"), 404)["type"] == "invalid_request_error"
    assert _error(httpx.get(url + "/v1/chat/completions"), 405)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="selfevolve", messages=Q, temperature=3)
    assert e.value.param == "temperature"


def test_backend_failures_are_clean_errors(ws, lib):
    from tests.serve_scripted import ServeScriptedPolicy

    class Broken(ServeScriptedPolicy):
        async def generate(self, chats, params):
            if "long" in chats[-1][-1]["content"]:
                raise ValueError("prompt (9000 tokens) + max_tokens (16) exceeds the model's context of 8192 tokens")
            raise RuntimeError("a bug in the backend")

    app = create_app(ServeConfig(workspace=ws, model=MODEL), library=lib, policy=Broken())
    with live_server(app) as url:
        body = {"model": "selfevolve", "messages": [{"role": "user", "content": "long prompt"}]}
        assert _error(httpx.post(url + "/v1/chat/completions", json=body), 400)["code"] == "context_length_exceeded"
        body["messages"][0]["content"] = "hi"
        err = _error(httpx.post(url + "/v1/chat/completions", json=body), 500)
        assert err["type"] == "server_error" and "a bug" not in err["message"]
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.APIError):  # an error after the stream began arrives as an error event
            list(client.chat.completions.create(model="selfevolve", messages=body["messages"], stream=True))
        assert ServedStore(ws / "served.db").counts()["served"] == 0  # nothing was served, nothing kept
