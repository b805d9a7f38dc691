"""The OpenAI-compatible backend against a real local HTTP server (http.server in a thread)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agent.policy import SamplingParams, load_policy
from agent.policy.openai_backend import OpenAIBackendError, OpenAIPolicy


class FakeServer:
    """Answers /v1/chat/completions with canned JSON; ``fail_first`` requests get ``fail_status``."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_first = 0
        self.fail_status = 500
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
                    failing = server.fail_first > 0
                    server.fail_first -= 1
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": "not found"})
                if failing:
                    return self._send(server.fail_status, {"error": "overloaded"})
                n = body.get("n", 1)
                user = body["messages"][-1]["content"]
                choices = [
                    {
                        "index": i,
                        "message": {"role": "assistant", "content": f"{body['model']}: {user} #{i}"},
                        "finish_reason": "length" if body["max_tokens"] <= 3 else "stop",
                    }
                    for i in range(n)
                ]
                self._send(200, {"choices": choices, "usage": {"prompt_tokens": 11, "completion_tokens": 4 * n}})

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass  # keep test output clean

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    thread = threading.Thread(target=fake.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield fake
    fake.httpd.shutdown()
    fake.httpd.server_close()


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def test_generate_maps_request_and_response(server: FakeServer) -> None:
    policy = load_policy(f"openai:{server.base_url}#tiny-model", api_key="sk-test")
    params = SamplingParams(max_tokens=32, temperature=0.5, top_p=0.9, stop=("\n\n",), seed=7, n=2)
    out = await policy.generate([chat("a"), chat("b")], params)
    assert [c.text for c in out] == ["tiny-model: a #0", "tiny-model: a #1", "tiny-model: b #0", "tiny-model: b #1"]
    assert all(c.prompt_tokens == 11 and c.completion_tokens == 4 and c.finish_reason == "stop" for c in out)
    sent = sorted(server.requests, key=lambda r: r["messages"][0]["content"])[0]
    assert sent["path"] == "/v1/chat/completions" and sent["auth"] == "Bearer sk-test"
    assert {k: sent[k] for k in ("model", "max_tokens", "temperature", "top_p", "n", "stop", "seed")} == {
        "model": "tiny-model", "max_tokens": 32, "temperature": 0.5, "top_p": 0.9, "n": 2, "stop": ["\n\n"], "seed": 7,
    }
    [short] = await policy.generate([chat("c")], SamplingParams(max_tokens=3))
    assert short.finish_reason == "length" and "seed" not in server.requests[-1]
    await policy.aclose()


async def test_retries_5xx_then_succeeds(server: FakeServer) -> None:
    server.fail_first = 2
    policy = OpenAIPolicy(server.base_url, "m", max_tries=3, backoff_s=0.01)
    [c] = await policy.generate([chat("x")], SamplingParams())
    assert c.text == "m: x #0"
    assert len(server.requests) == 3
    await policy.aclose()


async def test_gives_up_after_max_tries_and_names_the_url(server: FakeServer) -> None:
    server.fail_first, server.fail_status = 10, 429
    policy = OpenAIPolicy(server.base_url, "m", max_tries=2, backoff_s=0.01)
    with pytest.raises(OpenAIBackendError, match=r"POST http://127\.0\.0\.1:\d+/v1/chat/completions failed after 2 tries: HTTP 429"):
        await policy.generate([chat("x")], SamplingParams())
    assert len(server.requests) == 2
    await policy.aclose()


async def test_client_errors_are_not_retried(server: FakeServer) -> None:
    policy = OpenAIPolicy(server.base_url + "/wrong", "m", backoff_s=0.01)
    with pytest.raises(OpenAIBackendError, match="failed: HTTP 404.*is 'm' served"):
        await policy.generate([chat("x")], SamplingParams())
    assert len(server.requests) == 1
    await policy.aclose()


async def test_unreachable_server_is_a_clear_error() -> None:
    policy = load_policy("openai:http://127.0.0.1:9/v1#m", max_tries=3, backoff_s=0.01)
    with pytest.raises(OpenAIBackendError) as info:
        await policy.generate([chat("x")], SamplingParams())
    message = str(info.value)
    assert message.startswith("POST http://127.0.0.1:9/v1/chat/completions failed after 3 tries: ConnectError")
    assert "is the server running at http://127.0.0.1:9/v1?" in message
    await policy.aclose()


async def test_set_adapter_switches_the_served_model_name(server: FakeServer) -> None:
    policy = OpenAIPolicy(server.base_url, "base-model", served_names={"v2": "lora-v2"}, backoff_s=0.01)
    policy.set_adapter("v1", "/adapters/v1")
    [a] = await policy.generate([chat("q")], SamplingParams())
    policy.set_adapter("v2", "/adapters/v2")
    [b] = await policy.generate([chat("q")], SamplingParams())
    policy.set_adapter("base", None)
    [c] = await policy.generate([chat("q")], SamplingParams())
    assert [r["model"] for r in server.requests] == ["v1", "lora-v2", "base-model"]
    assert [x.model_version for x in (a, b, c)] == ["v1", "v2", "base"]
    await policy.aclose()


def test_bad_openai_spec_names_the_form() -> None:
    with pytest.raises(ValueError, match=r"openai:<base_url>#<model>"):
        load_policy("openai:localhost:8000#m")


def test_cli_generate_against_the_server(server: FakeServer) -> None:
    from typer.testing import CliRunner

    from agent.cli import app

    spec = f"openai:{server.base_url}#base-model"
    result = CliRunner().invoke(app, ["generate", "hello", "--model", spec, "--adapter", "lora-v2", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["text"] == "lora-v2: hello #0" and data["model_version"] == "lora-v2" and data["model"] == spec
    assert data["prompt_tokens"] == 11 and data["completion_tokens"] == 4 and data["finish_reason"] == "stop"
