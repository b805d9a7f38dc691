"""The OpenAI-compatible routes: ``/v1/chat/completions`` (JSON and SSE), ``/v1/models``, ``/v1/feedback``.

Design decisions
- Each request calls the policy with one chat and ``n``; concurrent requests meet in the backend's
  micro-batcher (transformers: requests with equal sampling parameters share one padded batch).
- Every choice is kept in ``served.db`` before the response is sent, so any id a client receives can
  be rated with ``/v1/feedback``.
- Streaming: the backends produce a whole completion per batch (batched decoding has no per-request
  token callback), so an SSE stream sends the role chunk at once, keep-alive comments while the batch
  runs, then the text in word-sized chunks, the finish reasons, the usage chunk if
  ``stream_options.include_usage``, and ``[DONE]``. An error after the stream began is sent as a
  ``data: {"error": …}`` event, which the openai client raises.
- Response extras (``selfevolve``: version, retrieved ids) ride along; OpenAI clients keep them in
  ``model_extra``.

    curl -s localhost:8000/v1/chat/completions -H 'Content-Type: application/json' \
      -d '{"model": "selfevolve", "messages": [{"role": "user", "content": "What is 2+3?"}]}'
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from agent.policy.base import Completion, SamplingParams
from agent.serve.errors import ApiError, error_body
from agent.serve.feedback import canonical_env
from agent.serve.schemas import ChatRequest, FeedbackRequest, parse
from agent.serve.state import ServeState, require_key
from agent.serve.store import ServedCompletion

log = logging.getLogger("selfevolve.serve")
KEEPALIVE_S = 10.0
_PIECE = re.compile(r"\s*\S+|\s+")


def router() -> APIRouter:
    r = APIRouter(prefix="/v1")
    r.add_api_route("/chat/completions", chat_completions, methods=["POST"])
    r.add_api_route("/models", list_models, methods=["GET"])
    r.add_api_route("/models/{model_id:path}", get_model, methods=["GET"])
    r.add_api_route("/feedback", feedback, methods=["POST"])
    return r


def sampling(req: ChatRequest, st: ServeState) -> SamplingParams:
    cfg = st.config
    max_tokens = req.max_completion_tokens or req.max_tokens or cfg.default_max_tokens
    if max_tokens > cfg.max_tokens_limit:
        raise ApiError(400, f"max_tokens {max_tokens} exceeds this server's limit of {cfg.max_tokens_limit}; ask for "
                       "fewer (or restart the server with a larger --max-tokens-limit)", param="max_tokens")
    if req.n > cfg.max_n:
        raise ApiError(400, f"n={req.n} exceeds this server's limit of {cfg.max_n} choices per request", param="n")
    if req.retrieve > cfg.max_retrieve:
        raise ApiError(400, f"retrieve={req.retrieve} exceeds this server's limit of {cfg.max_retrieve}", param="retrieve")
    temperature = 1.0 if req.temperature is None else float(req.temperature)
    return SamplingParams(max_tokens=max_tokens, temperature=temperature,
                          top_p=1.0 if req.top_p is None else float(req.top_p), stop=tuple(req.stop),
                          seed=req.seed, n=req.n)


async def chat_completions(request: Request) -> Any:
    st: ServeState = request.app.state.serve
    require_key(request)
    req = await parse(request, ChatRequest, st.config.max_body_bytes)
    params = sampling(req, st)
    target = st.engine.resolve(req.model)
    chat, retrieved = await _retrieve(st, req)
    call = _Call(st, req, chat, retrieved, target, params)
    if req.stream:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(call.events(), media_type="text/event-stream", headers=headers)
    return JSONResponse(call.body(await call.run()))


async def _retrieve(st: ServeState, req: ChatRequest) -> tuple[list[dict[str, str]], list[str]]:
    from memory.embed import EmbedderUnavailable

    if req.env is not None:
        req.env = canonical_env(req.env)  # the env as episodes record it, for the filter and for feedback
    try:
        return await st.engine.retrieve(req.chat(), req.retrieve, req.env)
    except EmbedderUnavailable as e:
        raise ApiError(503, f"retrieval is unavailable: {e}", param="retrieve", type="server_error") from None


class _Call:
    """One chat completion request: generate, keep every choice, shape the response."""

    def __init__(self, st: ServeState, req: ChatRequest, chat, retrieved, target, params: SamplingParams) -> None:
        self.st, self.req, self.chat, self.retrieved, self.target, self.params = st, req, chat, retrieved, target, params
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    async def run(self) -> list[Completion]:
        completions = await self.st.engine.generate(self.target, self.chat, self.params)
        if any(c.finish_reason == "error" for c in completions):
            raise ApiError(502, "the model backend failed to produce a completion; see the server's log", type="server_error")
        self._keep(completions)
        return completions

    def _keep(self, completions: list[Completion]) -> None:
        params = {"max_tokens": self.params.max_tokens, "temperature": self.params.temperature,
                  "top_p": self.params.top_p, "stop": list(self.params.stop), "seed": self.params.seed, "n": self.params.n}
        self.st.store.put([
            ServedCompletion(id=self.id, idx=i, model=self.req.model, version=c.model_version or self.target.version,
                             request_messages=self.req.chat(), prompt_messages=self.chat, output=c.text,
                             finish_reason=c.finish_reason, prompt_tokens=c.prompt_tokens,
                             completion_tokens=c.completion_tokens, latency_s=c.latency_s, params=params,
                             retrieved_ids=self.retrieved, env=self.req.env, created_at=float(self.created))
            for i, c in enumerate(completions)
        ])
        self.st.counters["completions"] += 1

    def _usage(self, completions: list[Completion]) -> dict[str, int]:
        prompt = completions[0].prompt_tokens if completions else 0
        done = sum(c.completion_tokens for c in completions)
        return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}

    def _head(self, obj: str, version: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.req.model,
                "system_fingerprint": f"selfevolve-{version}"}

    def body(self, completions: list[Completion]) -> dict[str, Any]:
        version = completions[0].model_version if completions else self.target.version
        choices = [{"index": i, "message": {"role": "assistant", "content": c.text}, "logprobs": None,
                    "finish_reason": c.finish_reason} for i, c in enumerate(completions)]
        return {**self._head("chat.completion", version), "choices": choices, "usage": self._usage(completions),
                "selfevolve": {"version": version, "retrieved_ids": self.retrieved}}

    def _chunk(self, choices: list[dict[str, Any]], version: str, **extra: Any) -> str:
        body = {**self._head("chat.completion.chunk", version), "choices": choices, **extra}
        if self.req.stream_options and self.req.stream_options.include_usage and "usage" not in extra:
            body["usage"] = None
        return f"data: {json.dumps(body)}\n\n"

    async def events(self) -> AsyncIterator[str]:
        version = self.target.version
        yield self._chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                            "finish_reason": None} for i in range(self.params.n)], version)
        task = asyncio.ensure_future(self.run())
        try:
            while not (await asyncio.wait({task}, timeout=KEEPALIVE_S))[0]:
                yield ": keep-alive\n\n"
            completions = task.result()
        except ApiError as e:
            yield f"data: {json.dumps(e.body())}\n\n"
            return
        except Exception:
            log.exception("streaming completion %s failed", self.id)
            yield f"data: {json.dumps(error_body('internal server error; see the server log', 'server_error'))}\n\n"
            return
        finally:
            if not task.done():
                task.cancel()
        version = completions[0].model_version if completions else version
        for i, c in enumerate(completions):
            for piece in _PIECE.findall(c.text):
                yield self._chunk([{"index": i, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}], version)
        yield self._chunk([{"index": i, "delta": {}, "logprobs": None, "finish_reason": c.finish_reason}
                           for i, c in enumerate(completions)], version)
        if self.req.stream_options and self.req.stream_options.include_usage:
            yield self._chunk([], version, usage=self._usage(completions))
        yield "data: [DONE]\n\n"


async def list_models(request: Request) -> dict[str, Any]:
    require_key(request)
    return {"object": "list", "data": request.app.state.serve.engine.models()}


async def get_model(request: Request, model_id: str) -> dict[str, Any]:
    require_key(request)
    for row in request.app.state.serve.engine.models():
        if row["id"] == model_id:
            return row
    raise ApiError(404, f"no model {model_id!r}; GET /v1/models lists them", param="model", code="model_not_found")


async def feedback(request: Request) -> dict[str, Any]:
    st: ServeState = request.app.state.serve
    require_key(request)
    req = await parse(request, FeedbackRequest, st.config.max_body_bytes)
    result = await st.feedback.rate(req)
    st.counters["feedback"] += 1
    return result
