"""Every 4xx/5xx in the OpenAI error shape: ``{"error": {"message", "type", "param", "code"}}``.

User errors (bad JSON, wrong types, unknown model, limits) are :class:`ApiError` with a message that
names the fix; FastAPI's validation errors, Starlette's HTTP errors (404, 405) and any other
exception are mapped here too, so no response ever carries a traceback. An unexpected exception is
logged with its traceback on the server and answered with a 500 naming the log.

    raise ApiError(400, "max_tokens must be <= 2048", param="max_tokens")
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("selfevolve.serve")

_TYPES = {401: "invalid_request_error", 403: "invalid_request_error", 404: "invalid_request_error",
          409: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error"}


class ApiError(Exception):
    """An error answered with ``status`` in the OpenAI shape."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None) -> None:  # noqa: A002 - the OpenAI field name
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:  # noqa: A002
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def response(error: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def validation_message(e: ValidationError | RequestValidationError) -> tuple[str, str | None]:
    """One line per wrong field ("messages.0.role: Input should be ..."), and the first field's name."""
    parts, first = [], None
    for err in e.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        path = ".".join(loc) or "(body)"
        first = first or (loc[0] if loc else None)
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"{path}: {msg}")
    return "invalid request: " + "; ".join(parts), first


def install(app: FastAPI) -> None:
    """Route every error the app can raise through the OpenAI shape."""

    @app.exception_handler(ApiError)
    async def _api(_: Request, e: ApiError) -> JSONResponse:
        return response(e)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, e: RequestValidationError) -> JSONResponse:
        message, param = validation_message(e)
        return response(ApiError(400, message, param=param, code="invalid_type"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        if e.status_code == 404:
            message = f"unknown endpoint {request.method} {request.url.path}; see /v1/models, /v1/chat/completions, /v1/feedback"
        elif e.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        else:
            message = str(e.detail)
        return response(ApiError(e.status_code, message, code="not_found" if e.status_code == 404 else None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception) -> JSONResponse:
        log.exception("unexpected error serving %s %s", request.method, request.url.path)
        return response(ApiError(500, f"internal server error ({type(e).__name__}); the traceback is in the server's log",
                                 type="server_error"))
