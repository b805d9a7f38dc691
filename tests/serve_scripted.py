"""Helpers for the ``selfevolve serve`` tests: a scripted policy plug-in and a live server in a thread.

    model = "python:tests.serve_scripted:policy"    # answers "[<version>] <n>: <reversed words>", batched

The policy is deterministic and says which version answered, so a test can see a promotion take
effect; ``set_adapter`` checks the adapter directory like the real backends. Its ``generate`` merges
nothing itself; it records the chats of every call.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from agent.policy.base import Chat, Completion, Policy, SamplingParams, parse_model_spec


class ServeScriptedPolicy(Policy):
    def __init__(self, version: str = "base", adapter_path: str | None = None, delay: float = 0.0) -> None:
        self.spec = parse_model_spec("python:tests.serve_scripted:policy")
        self.delay = delay
        self.calls: list[tuple[str, Chat, SamplingParams]] = []
        self.switches: list[str] = []
        self.set_adapter(version, adapter_path)

    def set_adapter(self, version: str, adapter_path: str | None) -> None:
        if adapter_path is not None and not (Path(adapter_path) / "adapter_config.json").exists():
            raise FileNotFoundError(f"no adapter_config.json in {adapter_path}")
        self.version = version
        self.switches.append(version)

    async def generate(self, chats: list[Chat], params: SamplingParams) -> list[Completion]:
        version = self.version
        if self.delay:
            await asyncio.sleep(self.delay)
        out = []
        for chat in chats:
            self.calls.append((version, chat, params))
            words = chat[-1]["content"].split()[::-1]
            for j in range(params.n):
                text = f"[{version}] {j}: " + " ".join(words)
                finish = "stop"
                tokens = text.split()
                if len(tokens) > params.max_tokens:
                    text, finish = " ".join(tokens[: params.max_tokens]), "length"
                for s in params.stop:
                    if s in text:
                        text, finish = text[: text.index(s)], "stop"
                out.append(Completion(text=text, prompt_tokens=sum(len(m["content"].split()) for m in chat),
                                      completion_tokens=len(text.split()), finish_reason=finish, model_version=version))
        return out


def policy(version: str = "base", adapter_path: str | None = None, **_: object) -> ServeScriptedPolicy:
    return ServeScriptedPolicy(version, adapter_path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_server(app, port: int | None = None, timeout: float = 30.0) -> Iterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 in a thread; yields the base URL; stops it afterwards."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name="serve-test", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError(f"the test server did not start on {url}")
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def register_adapter_version(lib, workspace: Path, method: str = "sft", promote: bool = True):
    """A registered version with a (fake, but complete) adapter dir, through the real registry."""
    import json

    from trainer import registry

    vid = registry.next_version_id(lib, method)

    def save(path: Path) -> None:
        path.mkdir(parents=True)
        (path / "adapter_config.json").write_text(json.dumps({"fake": True}))

    mv = registry.register_candidate(lib, workspace, vid, save, parent=lib.serving_version().id, method=method,
                                     base_model="python:tests.serve_scripted:policy")
    return registry.promote(lib, mv.id) if promote else mv
