"""The dashboard: the page at ``/`` (static files, no CDN) and the JSON it polls under ``/api/``.

- ``GET /api/summary``: library totals per env, served-feedback counts, the serving version, the server.
- ``GET /api/curves``: learning curves (see :func:`agent.serve.insights.learning_curves`).
- ``GET /api/episodes?q=&env=&success=&version=&limit=``: a search (by meaning) or the newest episodes.
- ``GET /api/episodes/{id}``: one episode's whole trajectory.
- ``GET /api/daemon``: the daemon's status, as ``selfevolve status --json``.

Library calls run in worker threads (a search embeds its query), so the API stays responsive while
the dashboard polls. Every text the page shows is inserted as text, never as HTML: episodes hold
model output.
"""

from __future__ import annotations

import asyncio
import time
from importlib import resources
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse

from agent.serve import insights
from agent.serve.errors import ApiError
from agent.serve.state import ServeState, require_key

STATIC = resources.files("agent.serve") / "static"
_FILES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css", "charts.js": "text/javascript"}


def router() -> APIRouter:
    r = APIRouter()
    r.add_api_route("/", index, methods=["GET"], response_class=HTMLResponse)
    r.add_api_route("/static/{name}", static, methods=["GET"])
    r.add_api_route("/health", health, methods=["GET"])
    r.add_api_route("/api/summary", summary, methods=["GET"])
    r.add_api_route("/api/curves", curves, methods=["GET"])
    r.add_api_route("/api/episodes", episodes, methods=["GET"])
    r.add_api_route("/api/episodes/{episode_id}", episode, methods=["GET"])
    r.add_api_route("/api/daemon", daemon, methods=["GET"])
    return r


def _state(request: Request) -> ServeState:
    require_key(request)
    return request.app.state.serve


async def index() -> HTMLResponse:
    return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))


async def static(name: str) -> FileResponse:
    if name not in _FILES:
        raise ApiError(404, f"no static file {name!r}", code="not_found")
    with resources.as_file(STATIC / name) as path:
        return FileResponse(path, media_type=_FILES[name], headers={"Cache-Control": "no-cache"})


async def health(request: Request) -> dict[str, Any]:
    return {"status": "ok", "uptime_s": round(_uptime(request.app.state.serve), 1)}


def _uptime(st: ServeState) -> float:
    return time.time() - st.started_at


async def summary(request: Request) -> dict[str, Any]:
    st = _state(request)

    def build() -> dict[str, Any]:
        lib = st.library
        envs = insights.env_table(lib)
        serving = lib.serving_version()
        return {
            "serving_version": serving.id, "policy_version": st.policy.version, "model": st.config.model,
            "episodes": sum(r["episodes"] for r in envs.values()), "envs": envs, "served": st.store.counts(),
            "versions": [{"id": v.id, "status": v.status, "method": v.method, "created_at": v.created_at,
                          "note": v.note} for v in lib.list_model_versions()],
            "server": {"uptime_s": _uptime(st), "completions": st.counters["completions"],
                       "feedback": st.counters["feedback"], "auth": st.config.api_key is not None,
                       "batches": _batches(st.policy)},
        }

    return await asyncio.to_thread(build)


def _batches(policy: Any) -> dict[str, Any] | None:
    """The micro-batcher's counts (backends that have one): how well concurrent requests were merged."""
    stats = getattr(getattr(policy, "batcher", None), "stats", None)
    if stats is None:
        return None
    return {"batches": stats.batches, "items": stats.items, "recent_sizes": list(stats.batch_sizes[-64:])}


async def curves(request: Request) -> dict[str, Any]:
    st = _state(request)

    def build() -> dict[str, Any]:
        daemon_state = insights.daemon_status(st.config.workspace)
        return {"curves": insights.learning_curves(st.library, daemon_state if daemon_state.get("present") else None)}

    return await asyncio.to_thread(build)


def _flag(value: str | None, name: str) -> bool | None:
    if value in (None, "", "any"):
        return None
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise ApiError(400, f"{name} must be true, false or any, not {value!r}", param=name)


async def episodes(request: Request, q: str = "", env: str = "", success: str = "", version: str = "",
                   limit: int = 50) -> dict[str, Any]:
    st = _state(request)
    if not 1 <= limit <= 500:
        raise ApiError(400, f"limit must be in 1..500, got {limit}", param="limit")
    flag = _flag(success, "success")
    filters = {"env": env or None, "success": flag, "model_version": version or None}

    def build() -> dict[str, Any]:
        lib = st.library
        if q.strip():
            hits = lib.search(q, k=limit, **filters)
            rows = [insights.episode_row(lib.get(h.episode_id), h.score) for h in hits]
            return {"mode": "search", "query": q, "episodes": rows}
        eps = insights.newest_episodes(lib, limit, **filters)
        return {"mode": "newest", "total": lib.count(**filters), "episodes": [insights.episode_row(e) for e in eps]}

    return await asyncio.to_thread(build)


async def episode(request: Request, episode_id: str) -> dict[str, Any]:
    st = _state(request)
    try:
        ep = await asyncio.to_thread(st.library.get, episode_id)
    except KeyError:
        raise ApiError(404, f"no episode {episode_id!r} in this workspace", param="episode_id", code="not_found") from None
    return insights.episode_detail(ep)


async def daemon(request: Request) -> dict[str, Any]:
    st = _state(request)
    return await asyncio.to_thread(insights.daemon_status, st.config.workspace)
