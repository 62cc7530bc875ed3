"""The hot paths, POST /predict and the Open Inference Protocol's infer, served by a shorter stack
of the same parts.

For a single-beat request, FastAPI's per-request machinery took about a third of the event loop's
time. `LeanApp` sends these two paths through the app's own middleware (bookkeeping, CORS, guard)
and exception handlers around plain Starlette routes, without FastAPI's outer layers (its native
telemetry, which the service does not configure, and its app-wide body limit: each route has its
own), its router of every route, and its per-request dependency solving and body and response
models:

- infer reads, checks and answers its body itself, so its route calls the same function;
- /predict validates the body with pydantic's JSON parser against the same PredictRequest and
  answers with the same PredictResponse. A body that does not validate is handed unchanged to
  FastAPI's route, so every error reads exactly as FastAPI writes it.

FastAPI's routes for both stay, for the OpenAPI document, for those errors and for any request the
lean routes do not take.
"""

from __future__ import annotations

import time

from fastapi import FastAPI
from fastapi.middleware.asyncexitstack import AsyncExitStackMiddleware
from pydantic import ValidationError
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route, Router, request_response

from service.api import classify, oip
from service.runtime.batching import Timeout
from service.schemas import PredictRequest
from service.settings import Settings

INFER_PATHS = [route.path for route in oip.router.routes if getattr(route, "endpoint", None) is oip.infer]


def is_hot(scope) -> bool:
    path = scope["path"]
    return scope["method"] == "POST" and (path == "/predict" or (path.startswith("/v2/models/")
                                                                 and path.endswith("/infer")))


class LeanApp(FastAPI):
    """FastAPI, with the hot paths sent through the lean stack (the module's docstring). The lean
    router hands whatever its routes do not match to FastAPI's router, inside the same stack."""

    def __init__(self, *args, lean_routes: list[Route] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.lean_router = Router(routes=list(lean_routes), redirect_slashes=False, default=self.router)
        self.lean_stack = None

    def build_middleware_stack(self):
        handlers = {key: handler for key, handler in self.exception_handlers.items() if key not in (500, Exception)}
        app = ExceptionMiddleware(AsyncExitStackMiddleware(self.lean_router), handlers=handlers, debug=self.debug)
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        last_resort = self.exception_handlers.get(Exception, self.exception_handlers.get(500))
        self.lean_stack = ServerErrorMiddleware(app, handler=last_resort, debug=self.debug)
        return super().build_middleware_stack()

    async def __call__(self, scope, receive, send):
        if self.lean_stack is not None and scope["type"] == "http" and self.lean_router.routes and is_hot(scope):
            scope["app"], scope["router"] = self, self.router
            if self.root_path:
                scope["root_path"] = self.root_path
            return await self.lean_stack(scope, receive, send)
        return await super().__call__(scope, receive, send)


class LeanRoute(Route):
    """A Starlette route that, like FastAPI's, names itself in the scope (the metrics' route label)."""

    def matches(self, scope):
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


class Replay:
    """An ASGI response that hands the request, with the body that was already read, to FastAPI's
    router: its own route answers it."""

    def __init__(self, body: bytes):
        self.body = body

    async def __call__(self, scope, receive, send):
        delivered = False

        async def replay():
            nonlocal delivered
            if delivered:
                return await receive()  # what follows the body: a disconnect
            delivered = True
            return {"type": "http.request", "body": self.body, "more_body": False}

        await scope["app"].router(scope, replay, send)


async def infer(request: Request) -> Response:
    parameters = request.path_params
    return await oip.infer(request, parameters["name"], parameters.get("version"))


def declares_json(content_type: str | None) -> bool:
    """Whether FastAPI would parse a body with this Content-Type as JSON (none, */json, */*+json)."""
    if not content_type:
        return True
    main, _, sub = content_type.split(";", 1)[0].strip().lower().partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


def check_deadline(request: Request) -> None:
    """A request whose deadline passed while its body was read is answered now, not parsed: under
    load, parsing bodies nobody will wait for is what makes every other answer late."""
    if time.monotonic() > request.state.deadline:
        raise Timeout("deadline passed before the body was parsed")


async def predict(request: Request) -> Response:
    body = await request.body()
    check_deadline(request)
    if not declares_json(request.headers.get("content-type")):
        return Replay(body)
    try:
        parsed = PredictRequest.model_validate_json(body)
    except ValidationError:
        return Replay(body)
    answer = await classify.predict(parsed, request, request.app.state.inference)
    return Response(answer.model_dump_json(), media_type="application/json")


def lean_routes(settings: Settings) -> list[Route]:
    def limited(endpoint):
        return RequestBodyLimitMiddleware(request_response(endpoint), settings.predict_body_bytes)

    return [LeanRoute("/predict", limited(predict), methods=["POST"], include_in_schema=False),
            *(LeanRoute(path, limited(infer), methods=["POST"], include_in_schema=False) for path in INFER_PATHS)]
