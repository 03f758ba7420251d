"""Every error leaves as JSON with a ``detail`` string (the reference APIs' convention) and an OpenAI-style
``error`` object, so both kinds of client can read it. No request ever gets a bare 500 page."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from parla.errors import ParlaError, validation_detail

log = logging.getLogger(__name__)

_TYPES = {
    409: "conflict_error",
    503: "service_unavailable",
    400: "invalid_request_error",
    401: "authentication_error",
    429: "rate_limit_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    502: "upstream_error",
}


def error_body(status: int, detail: str, param: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "detail": detail,
        "error": {"message": detail, "type": _TYPES.get(status, "server_error"), "param": param, "code": None},
        **extra,
    }


def _validation_message(exc: RequestValidationError) -> tuple[int, str, str | None]:
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        return 400, "the request body is not valid JSON", None
    detail, param = validation_detail(errors)
    return 422, detail, param


def install(app: FastAPI) -> None:
    @app.exception_handler(ParlaError)
    async def _parla(_: Request, exc: ParlaError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.status_code, exc.detail, exc.param),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),  # a 429's Retry-After
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        status, detail, param = _validation_message(exc)
        return JSONResponse(
            error_body(status, detail, param, errors=jsonable_encoder(exc.errors()) if status == 422 else []),
            status_code=status,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            error_body(exc.status_code, str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The exception's text may carry paths, SQL or data of other users: it goes to the log, and
        # the client gets an id to quote when reporting it.
        error_id = uuid.uuid4().hex[:12]
        log.exception("internal error %s on %s %s", error_id, request.method, request.url.path)
        detail = f"internal error {error_id}: the server failed; its log has the details under this id"
        return JSONResponse(error_body(500, detail, error_id=error_id), status_code=500)
