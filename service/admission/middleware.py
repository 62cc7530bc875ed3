"""Per-request bookkeeping as plain ASGI middleware (no per-request task or body copy, unlike
Starlette's BaseHTTPMiddleware): the request id (X-Request-ID, echoed back), the in-flight gauge,
the request's deadline, its place among the arrivals the batchers wait for, the duration
histogram by route template and one JSON log line (plus an "accepted" line at debug level).

The deadline covers the whole request, reading its body included: it runs from the request's
headers, and the body must arrive within ECG_BODY_TIMEOUT_S (else a 408) and by the deadline plus
BODY_SLACK_S (else a 504), either closing the connection: a client trickling its body holds
nothing for longer. A request takes its place among the batchers' arrivals only once its body is
in: a slow upload is not one the batchers should wait for.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time

from starlette.exceptions import HTTPException
from starlette.routing import compile_path

from service.metrics import ServiceMetrics
from service.settings import Settings

log = logging.getLogger("service.requests")
TIMEOUT_HEADER = b"x-request-timeout"
ID_HEADER = b"x-request-id"
SAFE_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")


def request_id(scope) -> str:
    """The client's X-Request-ID when it is a short token, else a new one."""
    for name, value in scope.get("headers", ()):
        if name == ID_HEADER and SAFE_ID.fullmatch(value):
            return value.decode()
    return f"{random.getrandbits(64):016x}"  # an identifier, not a secret: no system call per request


def route_template(scope) -> str:
    """The route template the router matched, or, for a request refused before routing (413, 401,
    503 at admission), the documented path it would have matched; "unmatched" for unknown paths."""
    route = scope.get("route")
    if route is not None:
        return route.path
    app = scope["app"]
    table = getattr(app.state, "route_templates", None)
    if table is None:
        table = app.state.route_templates = [(compile_path(path)[0], path) for path in app.openapi()["paths"]]
    return next((template for pattern, template in table if pattern.match(scope["path"])), "unmatched")


BODY_SLACK_S = 0.05  # a body may arrive this long past the request's deadline (then answered 504 at once)


class BodyTimeout(HTTPException):
    """The body did not arrive in time: 408 (the body timeout) or 504 (the request's deadline), and
    the connection closes (the rest is not awaited)."""

    def __init__(self, seconds: float, deadline: bool):
        if deadline:
            super().__init__(504, f"the request's deadline of {seconds:g} s passed while its body was read",
                             {"connection": "close"})
        else:
            super().__init__(408, f"request body not received within {seconds:g} s", {"connection": "close"})


class NoTicket:
    """The place of a request whose body is still arriving: none yet, so done() does nothing."""

    def done(self) -> None:
        pass


NO_TICKET = NoTicket()


def has_body(scope) -> bool:
    """Whether the request announces a body (a Content-Length above 0, or a Transfer-Encoding)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return value != b"0"
        if name == b"transfer-encoding":
            return True
    return False


def timed_receive(receive, body_s: float, timeout_s: float, started: float, on_complete):
    """`receive`, each call bounded so the whole body arrives within `body_s` and by the request's
    deadline (`timeout_s` after `started`, time.monotonic(), the event loop's clock) plus
    BODY_SLACK_S; `on_complete()` once the last part is in. After the body, untouched."""
    reading = True
    by_deadline = timeout_s + BODY_SLACK_S < body_s
    deadline = started + (timeout_s + BODY_SLACK_S if by_deadline else body_s)

    async def receive_in_time():
        nonlocal reading
        if not reading:
            return await receive()
        try:
            async with asyncio.timeout_at(deadline):
                message = await receive()
        except TimeoutError:
            reading = False
            raise BodyTimeout(timeout_s if by_deadline else body_s, by_deadline) from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            reading = False
            if message["type"] == "http.request":
                on_complete()
        return message

    return receive_in_time


def is_inference(path: str) -> bool:
    return path.startswith("/predict") or (path.startswith("/v2/models/") and path.endswith("/infer"))


def requested_timeout(scope, settings: Settings) -> float:
    """Seconds this request may take: X-Request-Timeout (clamped to the service's maximum) or the
    default. A malformed header gets the default: the request is not refused for it."""
    for name, value in scope.get("headers", ()):
        if name == TIMEOUT_HEADER:
            try:
                seconds = float(value)
            except ValueError:
                break
            if seconds > 0 and seconds == seconds:
                return min(seconds, settings.max_request_timeout_s)
            break
    return settings.request_timeout_s


class RequestBookkeeping:
    def __init__(self, app, settings: Settings, metrics: ServiceMetrics):
        self.app, self.settings, self.metrics = app, settings, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        rid = state["request_id"] = request_id(scope)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(json.dumps({"event": "accepted", "request_id": rid, "path": scope["path"]}))
        timeout = requested_timeout(scope, self.settings)
        state["timeout_s"] = timeout
        now = time.monotonic()
        state["deadline"] = now + timeout
        inference = getattr(scope["app"].state, "inference", None)
        counts = inference is not None and is_inference(scope["path"])
        body = has_body(scope)
        state["ticket"] = (NO_TICKET if body else inference.arrivals.ticket()) if counts else None
        if body:
            def body_complete():
                if counts:
                    state["ticket"] = inference.arrivals.ticket()

            receive = timed_receive(receive, self.settings.body_timeout_s, timeout, now, body_complete)
        status = 500

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid.encode())]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            if state["ticket"] is not None:
                state["ticket"].done()
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - started
            route = route_template(scope)
            self.metrics.child(self.metrics.http_duration, route, scope["method"], str(status)).observe(elapsed)
            if log.isEnabledFor(logging.INFO):
                entry = {"event": "request", "request_id": rid, "method": scope["method"], "route": route,
                         "status": status, "duration_ms": round(1000 * elapsed, 3), **state.get("log", {})}
                log.info(json.dumps(entry))
