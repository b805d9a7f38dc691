"""Build the FastAPI app from a config (or from ready parts, in tests) and run it with uvicorn.

    app = create_app(config)                       # loads the library and the serving policy
    app = create_app(config, policy=p, library=lib)  # tests and benchmarks hand in their own parts
    run(config)                                    # uvicorn, one process, until SIGINT/SIGTERM

The app owns what it opened: on shutdown it closes the policy's batcher, served.db and (if it opened
it) the library. The policy is loaded before the socket opens, so a client never meets a half-started
server; ``GET /health`` answers once it is up.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from fastapi import FastAPI

from agent.serve import dashboard, errors, openai_routes
from agent.serve.config import ServeConfig
from agent.serve.engine import Engine
from agent.serve.feedback import FeedbackRecorder
from agent.serve.state import ServeState
from agent.serve.store import ServedStore

log = logging.getLogger("selfevolve.serve")


def open_library(config: ServeConfig) -> Any:
    from memory import ExperienceLibrary

    embedder = None
    if config.embedder != "default":
        from agent.daemon.config import load_plugin

        embedder = load_plugin(config.embedder)()
    return ExperienceLibrary(config.workspace, embedder=embedder)


def load_serving_policy(config: ServeConfig, library: Any) -> Any:
    """The base model with the registry's serving adapter (micro-batcher settings from the config)."""
    from agent.policy.base import parse_model_spec
    from agent.serving import serving_policy

    options = {}
    if parse_model_spec(config.model).backend == "transformers":
        options = {"window_ms": config.window_ms, "max_batch_size": config.max_batch_size}
    return serving_policy(config.model, library, **options)


def create_app(config: ServeConfig, *, policy: Any = None, library: Any = None) -> FastAPI:
    """The app: OpenAI routes under ``/v1``, the dashboard at ``/`` and ``/api``; errors in OpenAI shape."""
    owns_library = library is None
    library = library if library is not None else open_library(config)
    owns_policy = policy is None
    policy = policy if policy is not None else load_serving_policy(config, library)
    store = ServedStore(config.served_db)
    state = ServeState(config=config, engine=Engine(policy, library, config.model, config.min_hint_score),
                       library=library, store=store, feedback=FeedbackRecorder(store, library))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        if owns_policy:
            await policy.aclose()
        store.close()
        if owns_library:
            library.close()

    # No /docs: FastAPI's Swagger page loads from a CDN, and this server works offline.
    app = FastAPI(title="selfevolve", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serve = state
    errors.install(app)
    app.include_router(openai_routes.router())
    app.include_router(dashboard.router())
    return app


def run(config: ServeConfig, app: FastAPI | None = None, log_level: str = "info") -> None:
    """Serve ``app`` (default: :func:`create_app`) on ``config.host:config.port`` until stopped."""
    import uvicorn

    app = app or create_app(config)
    uvicorn.run(app, host=config.host, port=config.port, log_level=log_level, workers=1, access_log=False,
                timeout_graceful_shutdown=10)
