"""Which model answers: the registry's serving version over a base model spec.

``selfevolve run`` and the daemon serve the latest *promoted* version (a LoRA adapter over the base
model), or the base model when nothing has been promoted; ``--version`` picks one explicitly.
Adapters apply only to the base they were trained on (transformers or vLLM backends).
"""

from __future__ import annotations

import logging
from pathlib import Path

from agent.policy.base import Policy, parse_model_spec
from memory.protocol import Library, ModelVersions

log = logging.getLogger(__name__)


def open_library(workspace: Path, chroma_url: str | None = None) -> Library:
    """The workspace's library (the library itself honours ``$SELFEVOLVE_CHROMA_URL``)."""
    from memory import ExperienceLibrary

    return ExperienceLibrary(workspace, chroma_url=chroma_url)


def serving_policy(model_spec: str, library: ModelVersions, version: str | None = None, **options: object) -> Policy:
    """Load ``model_spec`` with the adapter of ``version`` (default: the library's serving version)."""
    from agent.policy import load_policy

    adapter, version_id = serving_target(model_spec, library, version)
    return load_policy(model_spec, adapter_path=adapter, version=version_id, **options)


def serving_target(model_spec: str, library: ModelVersions, version: str | None = None) -> tuple[str | None, str]:
    """(adapter path or None, version id) that ``model_spec`` serves for ``version``, checked but not loaded.

    :func:`serving_policy` loads it here; Ray workers (:mod:`agent.scale`) load it on their node."""
    spec = parse_model_spec(model_spec)
    mv = library.get_model_version(version) if version else library.serving_version()
    adapter = mv.adapter_path if mv.adapter_path else None
    if adapter and spec.backend == "openai":
        log.warning("version %s is an adapter; an OpenAI-compatible server must serve it itself", mv.id)
        return None, mv.id
    if adapter and spec.backend in ("python", "pool"):  # a plug-in decides what an adapter means to it; a pool
        # pushes it to its servers, which load it from this path (shared storage) and refuse a wrong shape
        return adapter, mv.id
    if adapter and str(spec) != mv.base_model and not (spec.path == "default" and mv.base_model in ("default", "")):
        raise ValueError(
            f"version {mv.id} is an adapter for base model {mv.base_model!r}, not {str(spec)!r}: "
            f"pass --model {mv.base_model} or --version base"
        )
    if adapter and not Path(adapter).exists():
        raise FileNotFoundError(f"adapter of version {mv.id} is missing at {adapter}; run `selfevolve models rollback`")
    return adapter, mv.id
