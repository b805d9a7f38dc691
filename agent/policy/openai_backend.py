"""Any OpenAI-compatible chat server (vLLM serve, llama.cpp server, Ollama, OpenAI itself).

Each chat becomes one ``POST <base_url>/chat/completions`` with ``n`` choices; chats of one call are
sent concurrently (at most ``max_concurrency`` in flight). The server does its own batching.

Failures: 429, 5xx, timeouts and connection errors are retried ``max_tries`` times in all with
exponential backoff (``backoff_s``, doubling, capped at ``max_backoff_s``; a numeric ``Retry-After``
is honoured up to that cap). Other 4xx fail at once. Either way the error names the URL and what
failed, e.g. ``POST http://127.0.0.1:9/v1/chat/completions failed after 3 tries: ConnectError: ...``.

Token counts come from the response's ``usage``. The OpenAI API reports completion tokens per request,
not per choice: with ``n > 1`` each choice gets ``len(choice["token_ids"])`` when the server returns
token ids (vLLM with ``return_token_ids``), otherwise an even split of the total (an estimate).

Adapters: vLLM serves each LoRA adapter under its own model name
(``vllm serve BASE --enable-lora --lora-modules v3=/path/to/adapter``). ``set_adapter(version, path)``
therefore switches the requested model name: to ``served_names[version]`` if given, else to ``version``
itself; ``path`` only says "an adapter" (the server, not this process, loads the weights), and
``None`` goes back to the base model name.

    selfevolve generate "What is 2+3?" --model openai:http://localhost:8000/v1#HuggingFaceTB/SmolLM2-135M-Instruct
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any

import httpx

from agent.policy.base import Chat, Completion, FinishReason, ModelSpec, Policy, SamplingParams

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class OpenAIBackendError(RuntimeError):
    """A request to an OpenAI-compatible server failed (the message names the URL and the cause).

    ``transient``: the server failed (connection error, timeout, 408/409/429/5xx after every try) rather
    than refused the request; ``status``: the last HTTP status, None for a transport error. The server
    pool (:mod:`agent.policy.pool_backend`) fails over on these."""

    def __init__(self, message: str, *, status: int | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient


class OpenAIPolicy(Policy):
    """Async client for ``<base_url>/chat/completions``."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 10.0,
        max_tries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        max_concurrency: int = 32,
        served_names: dict[str, str] | None = None,
        version: str = "base",
    ) -> None:
        if max_tries < 1:
            raise ValueError(f"max_tries must be >= 1, got {max_tries}")
        self.spec = ModelSpec("openai", base_url.rstrip("/"), model)
        self.url = f"{self.spec.path}/chat/completions"
        self.base_model = model
        self.model = model
        self.version = version
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout = httpx.Timeout(timeout_s, connect=min(connect_timeout_s, timeout_s))
        self.max_tries = max_tries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_concurrency = max_concurrency
        self.served_names = dict(served_names or {})
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._semaphore: asyncio.Semaphore | None = None

    # -- Policy -------------------------------------------------------------------------------
    async def generate(self, chats: list[Chat], params: SamplingParams) -> list[Completion]:
        client, semaphore = self._client_for_loop()
        model, version = self.model, self.version

        async def one(chat: Chat) -> list[Completion]:
            async with semaphore:
                return await self._complete(client, chat, params, model, version)

        per_chat = await asyncio.gather(*(one(chat) for chat in chats))
        return [completion for completions in per_chat for completion in completions]

    def set_adapter(self, version: str, adapter_path: str | None) -> None:
        """Request ``served_names.get(version, version)`` (an adapter the server serves), or the base if None."""
        self.model = self.base_model if adapter_path is None else self.served_names.get(version, version)
        self.version = version

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- internals ----------------------------------------------------------------------------
    def _client_for_loop(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        """One client per event loop (an httpx pool cannot outlive the loop it was made on)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop or self._semaphore is None:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._client = httpx.AsyncClient(timeout=self.timeout, headers=headers)
            self._client_loop = loop
            self._semaphore = asyncio.Semaphore(self.max_concurrency)
        return self._client, self._semaphore

    def payload(self, chat: Chat, params: SamplingParams, model: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "messages": chat,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "n": params.n,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        return body

    async def _complete(
        self, client: httpx.AsyncClient, chat: Chat, params: SamplingParams, model: str, version: str
    ) -> list[Completion]:
        start = time.perf_counter()
        data = await self._post(client, self.payload(chat, params, model))
        try:
            return _parse(data, params.n, version, time.perf_counter() - start)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise OpenAIBackendError(
                f"POST {self.url} returned a response that is not an OpenAI chat completion "
                f"({type(e).__name__}: {e}): {str(data)[:300]}"
            ) from e

    async def _post(self, client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
        last, status = "", None
        for attempt in range(1, self.max_tries + 1):
            delay = min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)
            try:
                response = await client.post(self.url, json=body)
            except httpx.TransportError as e:  # connection refused/reset, timeouts, protocol errors
                last, status = f"{type(e).__name__}: {e or 'no detail'} (is the server running at {self.spec.path}?)", None
            else:
                if response.status_code == 200:
                    try:
                        return response.json()
                    except ValueError as e:
                        raise OpenAIBackendError(
                            f"POST {self.url} returned invalid JSON: {response.text[:300]!r}", status=200
                        ) from e
                last, status = f"HTTP {response.status_code}: {response.text[:300]}", response.status_code
                if response.status_code not in RETRY_STATUS:
                    hint = f" (is '{body['model']}' served? see GET {self.spec.path}/models)" if response.status_code == 404 else ""
                    raise OpenAIBackendError(f"POST {self.url} failed: {last}{hint}", status=status)
                retry_after = response.headers.get("retry-after", "")
                if retry_after.replace(".", "", 1).isdigit():
                    delay = min(float(retry_after), self.max_backoff_s)
            if attempt < self.max_tries:
                await asyncio.sleep(delay * (1 + 0.1 * random.random()))
        raise OpenAIBackendError(f"POST {self.url} failed after {self.max_tries} tries: {last}", status=status,
                                 transient=True)


def _finish(reason: str | None) -> FinishReason:
    return "length" if reason == "length" else "stop"


def _parse(data: dict[str, Any], n: int, version: str, latency: float) -> list[Completion]:
    choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
    if len(choices) != n:
        raise ValueError(f"expected {n} choices, got {len(choices)}")
    usage = data.get("usage") or {}
    prompt_tokens = int(usage.get("prompt_tokens", 0))
    total = int(usage.get("completion_tokens", 0))
    completions = []
    for i, choice in enumerate(choices):
        token_ids = choice.get("token_ids")
        count = len(token_ids) if token_ids is not None else total // n + (1 if i < total % n else 0)
        completions.append(
            Completion(
                text=choice["message"].get("content") or "",
                prompt_tokens=prompt_tokens,
                completion_tokens=count,
                finish_reason=_finish(choice.get("finish_reason")),
                token_ids=list(token_ids) if token_ids is not None else None,
                model_version=version,
                latency_s=latency,
            )
        )
    return completions
