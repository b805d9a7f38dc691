"""A minimal vLLM-like server for the pool tests: the server side is scripted, the client pool is under test.

:class:`FakeVLLM` runs ``http.server`` in a thread on 127.0.0.1 and speaks the parts of vLLM's API the pool
uses: ``GET /v1/models``, ``POST /v1/chat/completions`` (only for a model it serves: the base or a loaded
adapter, else 404 like vLLM), ``POST /v1/load_lora_adapter`` and ``/v1/unload_lora_adapter`` (same payloads
and status codes as vLLM 0.32). It records every request, can be slow (``delay``), refuse loads
(``refuse_load``), and die mid-run (``kill`` or ``die_after``: in-flight requests lose their connection,
new ones are refused).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # many concurrent connects must not overflow the listen backlog
    daemon_threads = True


class FakeVLLM:
    def __init__(self, base: str = "base-model", delay: float = 0.0) -> None:
        self.base, self.delay = base, delay
        self.loaded: dict[str, str] = {}  # adapter name -> path
        self.requests: list[tuple[str, dict[str, Any]]] = []  # (route, body) in arrival order
        self.answered: list[str] = []  # model names of the chat completions answered, in order
        self.refuse_load: str | None = None  # an error message: loads fail with HTTP 500 and it
        self.die_after: int | None = None  # answer this many chat completions, then die
        self.fail_status: int | None = None  # chat completions fail with this status while set
        self.can_read: Callable[[str], bool] = lambda path: True  # which adapter paths "exist" on this server
        self.dead = False
        self.lock = threading.Lock()
        self.httpd = _Server(("127.0.0.1", 0), self._handler())
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    def routes(self, route: str) -> list[dict[str, Any]]:
        return [body for r, body in self.requests if r == route]

    def kill(self, wait: bool = True) -> None:
        """Stop answering: new connections are refused, requests in flight lose their connection."""
        with self.lock:
            if self.dead:
                return
            self.dead = True
        closer = threading.Thread(target=self._close, daemon=True)  # shutdown() waits for serve_forever
        closer.start()
        if wait:
            closer.join()

    def _close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- the API -------------------------------------------------------------------------------
    def models(self) -> tuple[int, dict[str, Any]]:
        data = [{"id": self.base, "object": "model"}] + [{"id": n, "root": p, "parent": self.base} for n, p in self.loaded.items()]
        return 200, {"object": "list", "data": data}

    def load(self, body: dict[str, Any]) -> tuple[int, dict[str, Any] | str]:
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            return 400, _error("Both 'lora_name' and 'lora_path' must be provided.", 400)
        if self.refuse_load is not None:
            return 500, _error(self.refuse_load, 500)
        if not self.can_read(path):  # vLLM's answer for a path it cannot read
            return 404, _error(f"Loading lora {name} failed: No adapter found for {path}", 404)
        if name in self.loaded:
            return 400, _error(f"The lora adapter '{name}' has already been loaded.", 400)
        self.loaded[name] = path
        return 200, f"Success: LoRA adapter '{name}' added successfully."

    def unload(self, body: dict[str, Any]) -> tuple[int, dict[str, Any] | str]:
        name = body.get("lora_name")
        if name not in self.loaded:
            return 404, _error(f"The lora adapter '{name}' cannot be found.", 404)
        del self.loaded[name]
        return 200, f"Success: LoRA adapter '{name}' removed successfully."

    def chat(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        """The completion, or None: the server died while it was in flight (no response at all)."""
        model = body["model"]
        if model != self.base and model not in self.loaded:
            return 404, _error(f"The model `{model}` does not exist.", 404)
        user = body["messages"][-1]["content"]
        if self.fail_status is not None:
            return self.fail_status, _error("the engine is overloaded", self.fail_status)
        if user == "BAD":
            return 400, _error("This model's maximum context length is 8 tokens.", 400)
        time.sleep(self.delay)
        with self.lock:
            if self.dead or (self.die_after is not None and len(self.answered) >= self.die_after):
                dying = True
            else:
                dying = False
                self.answered.append(model)
        if dying:
            self.kill(wait=False)  # from a handler thread: do not wait for the serving loop here
            return None
        n = body.get("n", 1)
        choices = [{"index": i, "message": {"role": "assistant", "content": f"{self.base_url}|{model}|{user}"},
                    "finish_reason": "stop"} for i in range(n)]
        return 200, {"choices": choices, "usage": {"prompt_tokens": 3, "completion_tokens": 2 * n}}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                with fake.lock:
                    fake.requests.append((self.path, {}))
                self._reply(*fake.models()) if self.path == "/v1/models" else self._reply(404, _error("not found", 404))

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                with fake.lock:
                    fake.requests.append((self.path, body))
                routes = {"/v1/chat/completions": fake.chat, "/v1/load_lora_adapter": fake.load,
                          "/v1/unload_lora_adapter": fake.unload}
                result = routes[self.path](body) if self.path in routes else (404, _error("not found", 404))
                if result is None:
                    self.close_connection = True  # drop the connection without a response
                    return
                self._reply(*result)

            def _reply(self, status: int, payload: dict[str, Any] | str) -> None:
                text = payload if isinstance(payload, str) else json.dumps(payload)
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if isinstance(payload, str) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


def _error(message: str, code: int) -> dict[str, Any]:
    return {"error": {"message": message, "type": "BadRequestError" if code < 500 else "InternalServerError",
                      "param": None, "code": code}}


@contextmanager
def fake_servers(n: int, **kwargs: Any) -> Iterator[list[FakeVLLM]]:
    servers = [FakeVLLM(**kwargs) for _ in range(n)]
    try:
        yield servers
    finally:
        for s in servers:
            s.kill()
