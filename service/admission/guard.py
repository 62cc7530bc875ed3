"""Admission, before any work: API keys (when configured), the route's body limit against the
declared Content-Length, and a bound on requests in flight.

A request with a body counts as in flight from the moment its body is in, not while it arrives:
clients trickling their bodies (each cut off by the body timeout, service.admission.middleware)
cannot take the places of requests ready to be served. One whose body completes while the bound
is reached gets its 503 then.

Health, readiness and metrics pass the key and in-flight checks, so probes and scrapes keep
answering under overload. So do GETs of the pages the service serves (the front page, the viewer's
files, the API docs and their schema): they hold no patient data, and a browser cannot add a key to
a page it opens; the viewer sends the key the user types with its own requests.

A refused request is answered at once: 401 (the same words whatever was wrong with the key), 413
naming the limit (and the connection closed, so the rest is not read) or 503 with Retry-After; it
never waits in an unbounded queue. Bodies sent without a length are counted while they are read
(Starlette's RequestBodyLimitMiddleware, per router).
"""

from __future__ import annotations

import hmac
import math

import orjson

from starlette.exceptions import HTTPException

from service.admission.middleware import has_body, is_inference
from service.settings import Settings

OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready")
PAGE_PATHS = ("/", "/viewer", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")
PAGE_PREFIXES = ("/viewer/", "/docs/assets/")


def is_page(method: str, path: str) -> bool:
    """A GET of one of the service's own pages or their static files."""
    return method in ("GET", "HEAD") and (path in PAGE_PATHS or path.startswith(PAGE_PREFIXES))


def body_limit(path: str, settings: Settings) -> int:
    """The body limit of a route, in bytes (the routers are included with the same settings)."""
    if path in ("/predict/strip", "/predict/fhir"):
        return settings.strip_body_bytes
    if path == "/predict/wfdb":
        return settings.upload_body_bytes
    if path == "/predict" or (path.startswith("/v2/models/") and path.endswith("/infer")):
        return settings.predict_body_bytes
    return settings.max_body_bytes


def declared_length(headers) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def api_key_of(headers) -> bytes | None:
    for name, value in headers:
        if name == b"x-api-key":
            return value
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].strip()
    return None


class Admitted:
    """Requests admitted and not yet answered: one count for every stack a Guard is built into
    (FastAPI's and the hot paths', service.api.lean), so the bound holds for the whole app."""

    def __init__(self):
        self.count = 0


class Guard:
    def __init__(self, app, settings: Settings, admitted: Admitted):
        self.app, self.settings, self.admitted = app, settings, admitted
        self.keys = [k.get_secret_value().encode() for k in settings.api_keys]

    def authorised(self, scope) -> bool:
        given = api_key_of(scope.get("headers", ())) or b""
        # Compare with every key, always: the time taken says nothing about which part was wrong.
        matches = [hmac.compare_digest(given, key) for key in self.keys]
        return any(matches)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length, limit = declared_length(scope.get("headers", ())), body_limit(scope["path"], self.settings)
        if length is not None and length > limit:
            return await respond(send, 413, f"request body of {length} bytes is larger than this route's limit "
                                 f"of {limit} bytes", [(b"connection", b"close")])
        if scope["path"] in OPEN_PATHS or scope["method"] == "OPTIONS" or is_page(scope["method"], scope["path"]):
            return await self.app(scope, receive, send)
        if self.keys and not self.authorised(scope):
            return await respond(send, 401, "missing or invalid API key",
                                 [(b"www-authenticate", b'Bearer realm="ecg"')])
        retry = [(b"retry-after", str(max(1, math.ceil(self.settings.retry_after_s))).encode())]
        admitted = self.admitted
        if admitted.count >= self.settings.max_requests_in_flight:
            return await respond(send, 503, f"overloaded: {admitted.count} requests in flight (limit "
                                 f"{self.settings.max_requests_in_flight}); retry later", retry)
        inference = getattr(scope["app"].state, "inference", None)
        if inference is not None and is_inference(scope["path"]) and inference.saturated():
            return await respond(send, 503, "overloaded: the batching queue is full; retry later", retry)
        counted = False

        def admit() -> None:
            nonlocal counted
            if admitted.count >= self.settings.max_requests_in_flight:
                raise HTTPException(503, f"overloaded: {admitted.count} requests in flight (limit "
                                    f"{self.settings.max_requests_in_flight}); retry later",
                                    {"retry-after": retry[0][1].decode()})
            admitted.count += 1
            counted = True

        if has_body(scope):
            receive = admitted_on_body(receive, admit)
        else:
            admit()
        try:
            await self.app(scope, receive, send)
        finally:
            if counted:
                admitted.count -= 1


def admitted_on_body(receive, admit):
    """`receive`, calling `admit()` (which may refuse) when the last part of the body arrives."""
    pending = True

    async def receive_admitted():
        nonlocal pending
        message = await receive()
        if pending and (message["type"] != "http.request" or not message.get("more_body", False)):
            pending = False
            if message["type"] == "http.request":
                admit()
        return message

    return receive_admitted


async def respond(send, status: int, detail: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = orjson.dumps({"detail": detail})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})
