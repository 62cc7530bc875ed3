"""Every error the service answers with, in one place: what status, what body, nothing echoed.

- 422: FastAPI's validation format; inputs are echoed only when short and JSON-safe.
- 503 with Retry-After: overloaded (queue full, too many requests) or draining.
- 504: the request's deadline passed.
- 499 (recorded, never delivered): the client went away before its request was read.
- 500: anything unexpected; the body says only that, with the request id to find the log line.

No answer repeats more of what a client sent than a short, escaped prefix (`quoted`): not a long
model name, not a file's contents, never a server path or a library's internal message.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from service.signal.strips import StripError

log = logging.getLogger("service.errors")
MAX_ERRORS = 20
MAX_MESSAGE = 300  # characters of one error message (messages name fields and limits, never data)
QUOTED = 40  # characters of a client's value repeated in a message


def quoted(value, limit: int = QUOTED) -> str:
    """A client's value as a message may repeat it: escaped (repr) and cut to its first characters."""
    text = value if isinstance(value, str) else str(value)
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


def invalid(loc: tuple, message: str, value=None) -> RequestValidationError:
    """A 422 in FastAPI's own error format, for checks that depend on settings or loaded models."""
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": message, "input": value}])


def strip_invalid(err: StripError, samples_loc: tuple) -> RequestValidationError:
    """Where a strip's problem lies: `lead` is a query parameter, the samples are at `samples_loc`."""
    if err.field == "lead":
        return invalid(("query", "lead"), str(err))
    return invalid(samples_loc if err.field == "signal" else ("body", err.field), str(err))


def _printable(value) -> bool:
    """Echo back only short, JSON-safe inputs: never NaN/inf, never a whole beat array."""
    if isinstance(value, float):
        return bool(np.isfinite(value))
    return isinstance(value, (int, bool, type(None))) or (isinstance(value, str) and len(value) <= 100)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 body, minus inputs that cannot or should not be echoed."""
    detail = []
    for error in exc.errors()[:MAX_ERRORS]:
        message = str(error["msg"])
        item = {"type": error["type"], "loc": [x if not isinstance(x, str) else x[:QUOTED] for x in error["loc"]],
                "msg": message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + "..."}
        if _printable(error.get("input")):
            item["input"] = error.get("input")
        detail.append(item)
    if len(exc.errors()) > MAX_ERRORS:
        detail.append({"type": "truncated", "loc": ["body"],
                       "msg": f"{len(exc.errors()) - MAX_ERRORS} more errors not shown"})
    return JSONResponse({"detail": detail}, status_code=422)


def problem(status: int, detail: str, retry_after_s: float | None = None) -> JSONResponse:
    """A non-validation error: {"detail": ...}, with Retry-After (whole seconds) where given."""
    headers = {"Retry-After": str(max(1, math.ceil(retry_after_s)))} if retry_after_s is not None else None
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def client_gone(request: Request, exc: Exception) -> Response:
    """The client disconnected before its request was read: nothing to answer and no fault of
    ours; recorded as 499 (as nginx does), logged without a trace."""
    log.info("client disconnected during %s %s", request.method, request.url.path)
    return Response(status_code=499)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug: log it with its trace, answer without one."""
    request_id = request.headers.get("x-request-id", "-")
    log.error("unexpected error on %s %s (request id %s)", request.method, request.url.path, request_id,
              exc_info=exc)
    return JSONResponse({"detail": "internal error; the server logged it", "request_id": request_id},
                        status_code=500)
