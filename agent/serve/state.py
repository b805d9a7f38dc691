"""What the running server holds (one object on ``app.state.serve``) and the bearer-token check.

Auth: with an API key configured, every ``/v1/*`` and ``/api/*`` request must send
``Authorization: Bearer <key>`` (compared in constant time), else 401 in the OpenAI shape. The
dashboard page itself (``/``, ``/static/*``) holds no data and is public; its script asks for the key
when the API answers 401. ``/health`` is public and says only whether the server is up.
"""

from __future__ import annotations

import hmac
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from agent.serve.config import ServeConfig
from agent.serve.engine import Engine
from agent.serve.errors import ApiError
from agent.serve.feedback import FeedbackRecorder
from agent.serve.store import ServedStore


@dataclass
class ServeState:
    config: ServeConfig
    engine: Engine
    library: Any
    store: ServedStore
    feedback: FeedbackRecorder
    started_at: float = field(default_factory=time.time)
    counters: Counter = field(default_factory=Counter)

    @property
    def policy(self) -> Any:
        return self.engine.policy


def require_key(request: Request) -> None:
    """401 unless the request carries the configured bearer token (no-op without a key)."""
    key = request.app.state.serve.config.api_key
    if key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "missing API key: send the header 'Authorization: Bearer <key>' (the key given to "
                       "`selfevolve serve --api-key` or $SELFEVOLVE_API_KEY)", code="invalid_api_key")
    if not hmac.compare_digest(token.strip().encode(), key.encode()):
        raise ApiError(401, "incorrect API key", code="invalid_api_key")
