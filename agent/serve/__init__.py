"""``selfevolve serve``: the evolving agent behind the OpenAI API, with a live dashboard at ``/``.

One process (FastAPI on uvicorn) holds one policy, the workspace's experience library and a small
SQLite file of served completions (``<workspace>/served.db``):

- ``POST /v1/chat/completions`` (JSON or SSE), ``GET /v1/models``: :mod:`agent.serve.openai_routes`.
  Concurrent requests go straight to the policy, whose micro-batcher merges them into shared batches.
- The served version follows promotions made by a daemon in another process: before each request the
  registry's serving version is read from SQLite (a millisecond) and the adapter switched when it
  changed (:mod:`agent.serve.engine`).
- ``POST /v1/feedback`` turns a served completion into an episode of the experience library
  (:mod:`agent.serve.feedback`), so the daemon's SFT/DPO (and GRPO, when the client names a real
  environment) learn from real use.
- ``/`` is the dashboard (plain HTML/JS/SVG under ``static/``, no CDN) over ``/api/*``
  (:mod:`agent.serve.dashboard`).

    selfevolve serve --workspace .selfevolve --port 8000 --api-key "$KEY"
"""

from __future__ import annotations

from agent.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app"]


def create_app(*args, **kwargs):
    """See :func:`agent.serve.app.create_app` (imported lazily: FastAPI only when serving)."""
    from agent.serve.app import create_app as _create

    return _create(*args, **kwargs)
