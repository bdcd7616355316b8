"""Error responses: every failure is JSON ``{"error": "<what is wrong>"}``.

Raise :class:`ApiError` (or :class:`BadRequest`, :class:`PayloadTooLarge`,
:class:`Overloaded`) anywhere in a handler or a ``kserve.Model``; the
handlers installed by :func:`install_error_handlers` turn it, kserve's own
errors and FastAPI's validation errors into a 4xx/5xx JSON body.  Anything
else unexpected becomes a 500 whose body names no Python exception.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Dict, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve import errors as kerrors
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.common import metrics

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with an HTTP status and a message safe to show the caller."""

    status = 500

    def __init__(self, message: str, status: Optional[int] = None,
                 headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.headers = headers or {}


class BadRequest(ApiError, kerrors.InvalidInput):
    """400: the request is malformed or breaks the contract.

    Also a kserve ``InvalidInput``, so kserve's own code paths treat it as one.
    """

    status = 400

    def __init__(self, message: str):
        ApiError.__init__(self, message)
        self.reason = message

    def __str__(self) -> str:
        return self.message


class PayloadTooLarge(ApiError):
    """413: the body (or its decompressed form) is over the size limit."""

    status = 413


class Overloaded(ApiError):
    """503 with Retry-After: too many requests in flight."""

    status = 503

    def __init__(self, message: str, retry_after_s: float):
        super().__init__(message, headers={"Retry-After": str(max(1, int(round(retry_after_s))))})


def error_response(status: int, message: str, headers: Optional[Dict[str, str]] = None) -> JSONResponse:
    """The JSON error body every server here sends."""
    return JSONResponse(status_code=status, content={"error": message}, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
    return "invalid request body: " + "; ".join(parts)


async def read_json_object(request: Request) -> Dict[str, Any]:
    """The request body as a JSON object, or BadRequest naming what is wrong."""
    body = await request.body()
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"malformed JSON body: {e}") from None
    if not isinstance(value, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(value).__name__}")
    return value


async def _malformed_json(_: Request, exc: Exception) -> JSONResponse:
    return error_response(400, f"malformed JSON body: {exc}")


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, exc.headers)


async def _invalid_input(_: Request, exc: Exception) -> JSONResponse:
    return error_response(400, str(getattr(exc, "reason", None) or exc))


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(400, _validation_message(exc))


async def _http_exception(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))


async def _not_found(_: Request, exc: Exception) -> JSONResponse:
    return error_response(404, str(exc))


async def _not_ready(_: Request, exc: Exception) -> JSONResponse:
    return error_response(503, str(exc), {"Retry-After": "1"})


async def _not_implemented(_: Request, exc: Exception) -> JSONResponse:
    return error_response(501, str(exc) or "not implemented")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    metrics.ERRORS.labels(kind="internal").inc()
    return error_response(500, "internal error; the server log has the details")


def install_error_handlers(app: FastAPI) -> None:
    """Registers the handlers; call it after kserve has added its own."""
    handlers: Dict[Any, Any] = {
        ApiError: _api_error,
        kerrors.InvalidInput: _invalid_input,
        RequestValidationError: _validation,
        StarletteHTTPException: _http_exception,
        kerrors.ModelNotFound: _not_found,
        kerrors.ModelNotReady: _not_ready,
        kerrors.ServerNotReady: _not_ready,
        kerrors.ServerNotLive: _not_ready,
        NotImplementedError: _not_implemented,
        json.JSONDecodeError: _malformed_json,   # a plain route's `await request.json()`
        kerrors.UnsupportedProtocol: _invalid_input,
        kerrors.InferenceError: _unexpected,
        Exception: _unexpected,
    }
    for exc_type, handler in handlers.items():
        app.add_exception_handler(exc_type, handler)
