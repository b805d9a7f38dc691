"""Request bodies of the API, parsed by hand so every mistake gets an OpenAI-style 400 naming the fix.

Bodies are read with a byte limit (413 above it), decoded as JSON (400 "not valid JSON: ..."), then
validated by the pydantic models below (400 listing each wrong field). Fields the OpenAI API has but
this server cannot honour (tools, logprobs, non-text responses) are refused with a clear message
rather than silently ignored; harmless ones (``user``, ``metadata``, zero penalties) are accepted.
``extra_body`` fields of the openai client arrive as top-level fields: ``retrieve`` (experiences to
put into the prompt, default 0) and ``env`` (the environment the conversation belongs to).
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from fastapi import Request
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
)

from agent.serve.errors import ApiError, validation_message

ENV_NAME = re.compile(r"^[A-Za-z0-9_.:=,\-]{1,100}$")
UNSUPPORTED = {
    "tools": "tool calls are not supported by this server; send plain chat messages",
    "tool_choice": "tool calls are not supported by this server",
    "functions": "function calls are not supported by this server",
    "function_call": "function calls are not supported by this server",
    "logit_bias": "logit_bias is not supported by this server",
    "audio": "audio output is not supported by this server",
}


def check_env(v: str | None) -> str | None:
    if v is not None and not ENV_NAME.match(v):
        raise ValueError("env must be 1-100 characters of letters, digits and _.:=,- (e.g. 'served' or 'arithmetic')")
    return v


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def plain(self) -> dict[str, str]:
        """``{"role", "content"}`` as the policy takes it (``developer`` is a system turn)."""
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: StrictBool = False


class ChatRequest(BaseModel):
    """``POST /v1/chat/completions``. Numbers are strict: ``"0.5"`` for temperature is a 400, not a cast."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1, max_length=512)
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: StrictFloat | None = Field(default=None, ge=0, le=2)
    top_p: StrictFloat | None = Field(default=None, gt=0, le=1)
    n: StrictInt = Field(default=1, ge=1)
    stop: str | list[str] | None = Field(default=None, validate_default=True)
    seed: StrictInt | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    presence_penalty: StrictFloat | None = None
    frequency_penalty: StrictFloat | None = None
    logprobs: StrictBool | None = Field(default=None)
    response_format: dict[str, Any] | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None
    retrieve: StrictInt = Field(default=0, ge=0, description="Experiences retrieved into the prompt (extra_body).")
    env: str | None = Field(default=None, description="Environment of this conversation (extra_body).")

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must be non-empty strings")
        return stops

    _env = field_validator("env")(classmethod(lambda cls, v: check_env(v)))

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _penalty(cls, v: float | None) -> float | None:
        if v:
            raise ValueError("penalties are not supported by this server; leave them unset or 0")
        return v

    @field_validator("logprobs")
    @classmethod
    def _logprobs(cls, v: bool | None) -> bool | None:
        if v:
            raise ValueError("logprobs are not supported by this server; leave logprobs unset or false")
        return v

    @field_validator("response_format")
    @classmethod
    def _format(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None and v.get("type", "text") != "text":
            raise ValueError("only response_format {'type': 'text'} is supported by this server")
        return v

    @field_validator("messages")
    @classmethod
    def _last_turn(cls, v: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.role == "user" for m in v):
            raise ValueError("the conversation needs at least one user message")
        return v

    def chat(self) -> list[dict[str, str]]:
        return [m.plain() for m in self.messages]


class FeedbackRequest(BaseModel):
    """``POST /v1/feedback``: a user's verdict on one served choice."""

    model_config = ConfigDict(extra="forbid")

    completion_id: str = Field(min_length=1, max_length=100)
    index: StrictInt = Field(default=0, ge=0, description="Which choice of an n>1 completion.")
    success: StrictBool | None = None
    reward: StrictFloat | None = Field(default=None, ge=-1, le=1)
    comment: str | None = Field(default=None, max_length=4000)
    env: str | None = None

    _env = field_validator("env")(classmethod(lambda cls, v: check_env(v)))

    def verdict(self) -> tuple[bool, float]:
        """(success, reward): one given → the other follows (success ⇔ reward > 0; reward 1.0 / 0.0)."""
        if self.success is None and self.reward is None:
            raise ApiError(400, "give `success` (true/false) or `reward` (a number in [-1, 1])", param="success")
        if self.success is None:
            return float(self.reward) > 0, float(self.reward)
        return self.success, float(self.reward) if self.reward is not None else (1.0 if self.success else 0.0)


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 past ``limit`` bytes (checked on Content-Length and while reading)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes; send less "
                       "(or start the server with a larger --max-body-kb)", code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body exceeds the limit of {limit} bytes", code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


async def parse(request: Request, model: type[BaseModel], limit: int) -> Any:
    """Read, decode and validate a JSON body into ``model``; every failure is a 400 (or 413)."""
    raw = await read_body(request, limit)
    if not raw.strip():
        raise ApiError(400, "the request body is empty; send a JSON object", code="invalid_json")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"the request body must be a JSON object, not {type(data).__name__}", code="invalid_json")
    for field, why in UNSUPPORTED.items():
        if data.get(field) not in (None, [], {}):
            raise ApiError(400, why, param=field, code="unsupported_parameter")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        message, param = validation_message(e)
        raise ApiError(400, message, param=param, code="invalid_type") from None
