"""The policy behind the API: which version answers, switching adapters safely, retrieval into prompts.

Design decisions
- Model ids: ``selfevolve`` is the registry's serving version, read from SQLite before every request
  (``library.serving_version()``, about a millisecond), so a promotion or rollback by a daemon in another
  process is served from the next request on, without a restart. ``selfevolve@<id>`` is any registered
  version (``/v1/models`` lists the ones ever promoted, and the base as ``selfevolve@base``).
- One policy object serves one version at a time (``policy.version``; the transformers backend merges
  concurrent requests of one version into shared batches). :class:`VersionGate` lets any number of
  requests for the current version run together; a request for another version waits until they have
  finished, then switches with ``policy.set_adapter`` (an adapter loads once, ≈0.3 s; later switches
  are instant). While a switch waits, newer requests for the old version queue behind it, so a switch
  never starves. Mixed traffic across versions therefore serialises by version.
- Retrieval (``retrieve: k``) searches the library for successes similar to the last user message and
  puts their hints into it, the way the episode graph does (:func:`agent.prompts.with_hints`).

    engine = Engine(policy, library, base_spec="default"); mv = engine.resolve("selfevolve")
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from agent import prompts
from agent.policy.base import Chat, Completion, Policy, SamplingParams, parse_model_spec
from agent.policy.openai_backend import OpenAIBackendError
from agent.serve.config import MODEL_ID
from agent.serve.errors import ApiError

log = logging.getLogger("selfevolve.serve")
LISTED_STATUSES = ("promoted", "retired")  # retired = superseded or rolled back: it was served once


class VersionGate:
    """Runs requests of one version concurrently; drains them before switching to another version."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._cond = asyncio.Condition()
        self._active = 0
        self._waiting: dict[str, int] = {}  # requests waiting to start, per version

    @property
    def version(self) -> str:
        return self.policy.version

    @contextlib.asynccontextmanager
    async def use(self, version: str, adapter: str | None) -> AsyncIterator[None]:
        async with self._cond:
            self._waiting[version] = self._waiting.get(version, 0) + 1
            try:
                while not self._may_run(version):
                    await self._cond.wait()
                if version != self.version:
                    await self._switch(version, adapter)
            finally:
                self._waiting[version] -= 1
                if not self._waiting[version]:
                    del self._waiting[version]
                self._cond.notify_all()
            self._active += 1
        try:
            yield
        finally:
            async with self._cond:
                self._active -= 1
                self._cond.notify_all()

    def _may_run(self, version: str) -> bool:
        if version == self.version:  # a switch that is waiting goes first, so it never starves
            return not any(n for v, n in self._waiting.items() if v != version)
        return self._active == 0

    async def _switch(self, version: str, adapter: str | None) -> None:
        try:
            await asyncio.to_thread(self.policy.set_adapter, version, adapter)
        except NotImplementedError:
            raise ApiError(400, f"this server's backend ({self.policy.spec}) serves only version {self.version}; "
                           f"ask for model {MODEL_ID!r}", param="model", code="model_not_found") from None
        except (FileNotFoundError, OSError, ValueError) as e:
            raise ApiError(500, f"model version {version} cannot be loaded: {e}", type="server_error") from None
        except OpenAIBackendError as e:  # a pool: server refused the adapter; the previous version still serves
            raise ApiError(503, f"model version {version} cannot be served: {e}", type="server_error") from None
        log.info("now serving model version %s", version)


@dataclass
class Resolved:
    """What a request's ``model`` names: the version id and its adapter (None = the base weights)."""

    version: str
    adapter: str | None


class Engine:
    """Resolves model ids against the registry and generates through the version gate."""

    def __init__(self, policy: Policy, library: Any, base_spec: str, min_hint_score: float = 0.3) -> None:
        self.policy, self.library = policy, library
        self.base_spec = base_spec
        self.backend = parse_model_spec(base_spec).backend
        self.min_hint_score = min_hint_score
        self.gate = VersionGate(policy)

    # ----- model ids -----
    def resolve(self, model: str) -> Resolved:
        if model == MODEL_ID:
            mv = self.library.serving_version()
        elif model.startswith(MODEL_ID + "@") and len(model) > len(MODEL_ID) + 1:
            try:
                mv = self.library.get_model_version(model.split("@", 1)[1])
            except KeyError:
                raise ApiError(400, f"unknown model {model!r}; GET /v1/models lists the served ones", param="model",
                               code="model_not_found") from None
        else:
            raise ApiError(400, f"unknown model {model!r}: use {MODEL_ID!r} (the serving version) or "
                           f"'{MODEL_ID}@<version>' (GET /v1/models lists them)", param="model", code="model_not_found")
        return Resolved(mv.id, self._adapter_of(mv))

    def _adapter_of(self, mv: Any) -> str | None:
        if not mv.adapter_path:
            return None
        if self.backend == "transformers":
            spec = parse_model_spec(self.base_spec)
            if str(spec) != mv.base_model and not (spec.path == "default" and mv.base_model in ("default", "")):
                raise ApiError(400, f"version {mv.id} is an adapter for base model {mv.base_model!r}, but this server "
                               f"serves {self.base_spec!r}; restart it with --model {mv.base_model}", param="model",
                               code="model_not_found")
        return mv.adapter_path

    def models(self) -> list[dict[str, Any]]:
        """``/v1/models`` rows: the serving alias, every version ever promoted, the base."""
        serving = self.library.serving_version()
        rows = [_model_row(MODEL_ID, serving.created_at, serving=serving.id)]
        for mv in self.library.list_model_versions():
            if mv.status in LISTED_STATUSES:
                rows.append(_model_row(f"{MODEL_ID}@{mv.id}", mv.created_at, status=mv.status, method=mv.method))
        rows.append(_model_row(f"{MODEL_ID}@base", 0, status="base", base_model=self.base_spec))
        return rows

    # ----- generation -----
    async def generate(self, target: Resolved, chat: Chat, params: SamplingParams) -> list[Completion]:
        async with self.gate.use(target.version, target.adapter):
            try:
                return await self.policy.generate([chat], params)
            except ValueError as e:  # the backend's input checks (e.g. the context length)
                code = "context_length_exceeded" if "context" in str(e) else "invalid_request"
                raise ApiError(400, str(e), param="messages", code=code) from None

    async def retrieve(self, chat: Chat, k: int, env: str | None) -> tuple[Chat, list[str]]:
        """``chat`` with up to ``k`` similar past successes in its last user message, and their ids."""
        if k <= 0:
            return chat, []
        last = max(i for i, m in enumerate(chat) if m["role"] == "user")
        hints, ids = await asyncio.to_thread(self._hints, chat[last]["content"], k, env)
        if not hints:
            return chat, []
        out = [dict(m) for m in chat]
        out[last] = {"role": "user", "content": prompts.with_hints(out[last]["content"], hints)}
        return out, ids

    def _hints(self, text: str, k: int, env: str | None) -> tuple[list[str], list[str]]:
        hits = self.library.search(text, env=env, success=True, k=k * 3)
        hints, ids = [], []
        for hit in hits:
            if hit.score < self.min_hint_score:
                continue
            past = self.library.get(hit.episode_id)
            if past.task.split != "train":  # never show held-out tasks
                continue
            hints.append(past.hint_text())
            ids.append(hit.episode_id)
            if len(ids) == k:
                break
        return hints, ids


def _model_row(model_id: str, created: float, **extra: Any) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": int(created), "owned_by": "selfevolve", **extra}
