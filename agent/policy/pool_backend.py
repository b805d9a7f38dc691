"""A pool of OpenAI-compatible (vLLM) servers behind one policy: spreading, failover, LoRA push.

Why: one vLLM server fills one GPU; rollouts scale by running one server per GPU or node (as veRL,
OpenRLHF and SkyRL do) and spreading requests over them. This is the client side of that picture: the
episodes, the daemon and ``selfevolve serve`` see one :class:`~agent.policy.base.Policy`.

    selfevolve run --model pool:http://gpu1:8000/v1,http://gpu2:8000/v1#Qwen/Qwen2.5-1.5B-Instruct
    # every server, so promotions can push adapters to it:
    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve Qwen/Qwen2.5-1.5B-Instruct --enable-lora --max-lora-rank 64
    # or, on this machine: selfevolve engine start --runtime-lora --port 8011 (one state file per server)

Design decisions
- Generation reuses :class:`~agent.policy.openai_backend.OpenAIPolicy`, one per server (payload, parsing,
  token counts, its own retries: ``server_tries``, default 1 when there are other servers to fail over to).
- Spreading: every chat is one request to one server, the one with the fewest requests in flight from this
  pool ("least outstanding requests"); ties go round robin. A slow server keeps its few requests in flight
  and gets few new ones.
- Failover: a connection error, timeout, 408/409/429/5xx or 404 (the server lacks the model) marks that
  server down for ``down_s`` seconds (doubling with each consecutive failure, at most ``max_down_s``) and
  the request moves to another server; each request tries each server at most once. When no server is
  left up, :class:`PoolError` names every server with its last error. A server whose down time is over
  gets requests again (a success clears its record). Other 4xx (a bad request) fail at once: every
  server would refuse it too.
- Adapters (``set_adapter(version, path)``): pushed to every server at once through vLLM's runtime API:
  ``GET /v1/models`` (a server that already lists the name keeps it), else ``POST /v1/load_lora_adapter``
  ``{"lora_name": name, "lora_path": path}`` (``path`` as the *servers* see it: shared storage). The name is
  ``served_names.get(version, version)``. Only when every server has it does the pool request the new
  name. Otherwise the servers that took it in this push get ``POST /v1/unload_lora_adapter``, the pool
  keeps serving the old version, and :class:`AdapterPushError` names each failing server and its cause.
  A pushed version is remembered: switching back to it is a name change. A server that later answers
  404 for the served adapter (it restarted) gets it pushed again before the request is retried there.
  ``path=None`` serves the base model again (nothing to push).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from agent.policy.base import Chat, Completion, ModelSpec, Policy, SamplingParams
from agent.policy.openai_backend import OpenAIBackendError, OpenAIPolicy

RUNTIME_LORA_HINT = ("the server has no runtime adapter API: start vLLM with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True "
                     "and --enable-lora (`selfevolve engine start --runtime-lora` does both)")


class PoolError(OpenAIBackendError):
    """No server of the pool could answer (the message names every server and its last error)."""


class AdapterPushError(PoolError):
    """An adapter did not reach every server; the pool still serves the previous version.

    ``failed`` maps each failing server's base URL to the cause."""

    def __init__(self, message: str, failed: dict[str, str]) -> None:
        super().__init__(message)
        self.failed = failed


@dataclass
class Server:
    """One server of the pool and what the pool knows about it."""

    policy: OpenAIPolicy
    index: int
    outstanding: int = 0  # requests of this pool in flight on it
    failures: int = 0  # consecutive failures
    down_until: float = 0.0  # time.monotonic() before which no request goes to it
    last_error: str = ""
    completed: int = 0
    repush: threading.Lock = field(default_factory=threading.Lock)  # one re-push at a time (in a worker thread)

    @property
    def url(self) -> str:
        return self.policy.spec.path


class PoolPolicy(Policy):
    """Spreads chats over ``base_urls`` (see the module docstring); ``server_opts`` go to each OpenAIPolicy."""

    def __init__(self, base_urls: Sequence[str], model: str, *, version: str = "base", server_tries: int | None = None,
                 down_s: float = 2.0, max_down_s: float = 30.0, admin_timeout_s: float = 300.0,
                 served_names: dict[str, str] | None = None, **server_opts: Any) -> None:
        urls = [u.rstrip("/") for u in base_urls]
        if not urls or len(set(urls)) != len(urls):
            raise ValueError(f"a pool needs one or more distinct server URLs, got {list(base_urls)}")
        if down_s <= 0 or max_down_s < down_s:
            raise ValueError(f"need 0 < down_s <= max_down_s, got down_s={down_s}, max_down_s={max_down_s}")
        alias = server_opts.pop("max_tries", None)  # openai:'s name for it
        tries = server_tries or alias or (3 if len(urls) == 1 else 1)
        self.served_names = dict(served_names or {})
        self.servers = [Server(OpenAIPolicy(url, model, max_tries=tries, served_names=self.served_names, version=version,
                                            **server_opts), i) for i, url in enumerate(urls)]
        self.spec = ModelSpec("pool", ",".join(urls), model)
        self.version = version
        self.down_s, self.max_down_s = down_s, max_down_s
        self.admin_timeout = httpx.Timeout(admin_timeout_s, connect=min(10.0, admin_timeout_s))
        self.adapters: dict[str, str] = {}  # version -> adapter path, on every server
        self.adapter_path: str | None = None  # the served version's
        self._next = 0  # round-robin start for ties
        self._admin: httpx.Client | None = None
        self._admin_lock = threading.Lock()

    @property
    def model(self) -> str:
        """The model name requested now (the base model's, or the served adapter's)."""
        return self.servers[0].policy.model

    def completed(self) -> dict[str, int]:
        """Requests each server answered, by base URL (for benchmarks and status)."""
        return {s.url: s.completed for s in self.servers}

    # -- generation ---------------------------------------------------------------------------
    async def generate(self, chats: list[Chat], params: SamplingParams) -> list[Completion]:
        per_chat = await asyncio.gather(*(self._one(chat, params) for chat in chats))
        return [completion for completions in per_chat for completion in completions]

    async def _one(self, chat: Chat, params: SamplingParams) -> list[Completion]:
        tried: set[int] = set()
        while (server := self._pick(tried)) is not None:
            tried.add(server.index)
            try:
                out = await self._on(server, chat, params)
            except OpenAIBackendError as e:
                if not (e.transient or e.status == 404):
                    raise  # a bad request: every server would refuse it
                self._mark_down(server, str(e))
                continue
            server.failures, server.down_until = 0, 0.0
            server.completed += 1
            return out
        raise PoolError(self._down_message())

    def _pick(self, tried: set[int]) -> Server | None:
        """The up server with the fewest requests in flight (ties: round robin), or None if none is left."""
        now = time.monotonic()
        up = [s for s in self.servers if s.index not in tried and s.down_until <= now]
        if not up:
            return None
        n = len(self.servers)
        best = min(up, key=lambda s: (s.outstanding, (s.index - self._next) % n))
        self._next = (best.index + 1) % n
        return best

    async def _on(self, server: Server, chat: Chat, params: SamplingParams) -> list[Completion]:
        server.outstanding += 1
        try:
            try:
                return await server.policy.generate([chat], params)
            except OpenAIBackendError as e:
                name, path = server.policy.model, self.adapter_path
                if e.status != 404 or path is None:
                    raise
                _, cause = await asyncio.to_thread(self._repush, server, name, path)
                if cause is not None:
                    raise OpenAIBackendError(f"{server.url} lost adapter {name} and refused it again: {cause}",
                                             transient=True) from e
                return await server.policy.generate([chat], params)
        finally:
            server.outstanding -= 1

    def _repush(self, server: Server, name: str, path: str) -> tuple[str, str | None]:
        """The server lost the served adapter (it restarted): push it again, one request at a time."""
        with server.repush:
            return self._push_one(server, name, path)

    def _mark_down(self, server: Server, error: str) -> None:
        now = time.monotonic()
        server.last_error = error
        if server.down_until > now:
            return  # already down (another request in flight saw the same failure)
        server.failures += 1
        server.down_until = now + min(self.down_s * 2 ** (server.failures - 1), self.max_down_s)

    def _down_message(self) -> str:
        now = time.monotonic()
        lines = [f"  {s.url}: {s.last_error or 'no error recorded'} (down for {max(s.down_until - now, 0):.1f} s more)"
                 for s in self.servers]
        return (f"every server of the pool is down ({len(self.servers)}): no request can be answered\n"
                + "\n".join(lines))

    # -- adapters -----------------------------------------------------------------------------
    def set_adapter(self, version: str, adapter_path: str | None) -> None:
        """Serve ``version``: push its adapter to every server first (see the module docstring)."""
        if adapter_path is not None and self.adapters.get(version) != adapter_path:
            self._push(self.served_names.get(version, version), adapter_path)
            self.adapters[version] = adapter_path
        for server in self.servers:
            server.policy.set_adapter(version, adapter_path)
        self.version, self.adapter_path = version, adapter_path

    def _push(self, name: str, path: str) -> None:
        with ThreadPoolExecutor(max_workers=len(self.servers)) as ex:
            results = list(ex.map(lambda s: self._push_one(s, name, path), self.servers))
        failed = {s.url: cause for s, (_, cause) in zip(self.servers, results, strict=True) if cause is not None}
        if not failed:
            return
        undo = [(s, self._unload(s, name)) for s, (state, _) in zip(self.servers, results, strict=True)
                if state == "loaded"]
        lines = [f"  {url}: {cause}" for url, cause in failed.items()]
        lines += [f"  {s.url}: took it, unloaded again" if err is None else f"  {s.url}: took it, could not unload: {err}"
                  for s, err in undo]
        raise AdapterPushError(
            f"adapter {name!r} ({path}) did not load on every server, so the pool keeps serving "
            f"{self.version!r} ({len(failed)} of {len(self.servers)} failed):\n" + "\n".join(lines), failed)

    def _push_one(self, server: Server, name: str, path: str) -> tuple[str, str | None]:
        """('had' | 'loaded', None) when the server has the adapter ``name`` now, else ('failed', cause)."""
        try:
            client = self._admin_client()
            listed = client.get(f"{server.url}/models")
            if listed.status_code == 200 and name in {m.get("id") for m in listed.json().get("data", [])}:
                return "had", None
            r = client.post(f"{server.url}/load_lora_adapter", json={"lora_name": name, "lora_path": path})
        except httpx.HTTPError as e:
            return "failed", f"{type(e).__name__}: {e or 'no detail'}"
        except (ValueError, AttributeError) as e:  # GET /models answered something that is not a model list
            return "failed", f"GET {server.url}/models is not an OpenAI model list ({type(e).__name__}: {e})"
        if r.status_code == 200:
            return "loaded", None
        # vLLM answers 404 with its error object for an adapter path it cannot find; a bare 404/405 is a missing route
        hint = f" ({RUNTIME_LORA_HINT})" if r.status_code in (404, 405) and not _vllm_error(r) else ""
        return "failed", f"POST {server.url}/load_lora_adapter: HTTP {r.status_code}: {_error_text(r)}{hint}"

    def _unload(self, server: Server, name: str) -> str | None:
        """Unload ``name`` from ``server``; None on success, else the cause."""
        try:
            r = self._admin_client().post(f"{server.url}/unload_lora_adapter", json={"lora_name": name})
        except httpx.HTTPError as e:
            return f"{type(e).__name__}: {e or 'no detail'}"
        return None if r.status_code == 200 else f"HTTP {r.status_code}: {_error_text(r)}"

    def _admin_client(self) -> httpx.Client:
        """One blocking client for the adapter calls, shared by the push threads (httpx clients are thread-safe)."""
        with self._admin_lock:
            if self._admin is None:
                key = self.servers[0].policy.api_key
                self._admin = httpx.Client(timeout=self.admin_timeout,
                                           headers={"Authorization": f"Bearer {key}"} if key else {})
            return self._admin

    async def aclose(self) -> None:
        for server in self.servers:
            await server.policy.aclose()
        with self._admin_lock:
            if self._admin is not None:
                self._admin.close()
                self._admin = None


def _vllm_error(response: httpx.Response) -> str | None:
    """The message of vLLM's ``{"error": {"message": ...}}`` body, if it is one."""
    try:
        error = response.json().get("error")
        message = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError):
        return None
    return str(message) if message else None


def _error_text(response: httpx.Response) -> str:
    return _vllm_error(response) or response.text[:300]
