"""Settings of ``selfevolve serve``: one typed config, validated once, whose errors name the fix.

Limits exist so one client cannot exhaust the process: the request body size, ``max_tokens``, ``n``,
the number of stop strings and retrieved experiences. Defaults follow the OpenAI API where a client
would notice (``temperature`` 1.0, ``top_p`` 1.0); ``max_tokens`` defaults to ``default_max_tokens``.

    python -c "from agent.serve import ServeConfig; print(ServeConfig(workspace='.selfevolve'))"
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

API_KEY_ENV = "SELFEVOLVE_API_KEY"
MODEL_ID = "selfevolve"


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    workspace: Path = Field(description="Workspace: experience.db, the registry, served.db, daemon/.")
    model: str = Field(default="default", description="Base model spec (default | hf:<dir> | openai:... | python:...).")
    host: str = Field(default="127.0.0.1", description="Bind address; anything but loopback wants --api-key.")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port (0 = any free port).")
    api_key: str | None = Field(default=None, description=f"Bearer token clients must send (or ${API_KEY_ENV}).")
    max_body_bytes: int = Field(default=1 << 20, ge=1024, description="Largest request body accepted (413 above).")
    max_tokens_limit: int = Field(default=2048, ge=1, description="Largest max_tokens a request may ask for.")
    default_max_tokens: int = Field(default=256, ge=1, description="max_tokens when a request gives none.")
    max_n: int = Field(default=16, ge=1, le=128, description="Largest n (choices per request).")
    max_retrieve: int = Field(default=8, ge=0, le=32, description="Largest `retrieve` (experiences put in the prompt).")
    min_hint_score: float = Field(default=0.3, ge=-1, le=1, description="Cosine similarity below which a hit is not shown.")
    embedder: str = Field(default="default", description="'default' (MiniLM) or python:<module>:<factory>.")
    window_ms: float = Field(default=5.0, ge=0, description="Micro-batcher window of the transformers backend.")
    max_batch_size: int = Field(default=32, ge=1, description="Largest merged batch of the transformers backend.")

    @field_validator("api_key")
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            return None
        if v is not None and any(c.isspace() for c in v):
            raise ValueError("the API key must not contain whitespace (clients send it as 'Bearer <key>')")
        return v

    @model_validator(mode="after")
    def _default_tokens(self) -> ServeConfig:
        if self.default_max_tokens > self.max_tokens_limit:
            if "default_max_tokens" in self.model_fields_set:
                raise ValueError(f"default_max_tokens ({self.default_max_tokens}) exceeds max_tokens_limit "
                                 f"({self.max_tokens_limit}); lower it or raise the limit")
            self.default_max_tokens = self.max_tokens_limit
        return self

    @property
    def loopback(self) -> bool:
        if self.host in ("localhost", ""):
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def served_db(self) -> Path:
        return self.workspace / "served.db"
