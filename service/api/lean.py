"""Plain Starlette routes for the hot paths, matched before FastAPI's: POST /predict and the Open
Inference Protocol's infer.

For a single-beat request, FastAPI's per-request machinery (route matching across the included
routers, dependency solving, body and response models) took about a third of the event loop's
time. These routes do the same work with less around it, through the app's own body limit and
exception handlers:

- infer reads, checks and answers its body itself, so its route calls the same function;
- /predict validates the body with pydantic's JSON parser against the same PredictRequest and
  answers with the same PredictResponse. A body that does not validate is handed unchanged to
  FastAPI's route, so every error reads exactly as FastAPI writes it.

The APIRoutes stay, for the OpenAPI document and the other methods.
"""

from __future__ import annotations

from pydantic import ValidationError
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route, request_response

from service.api import classify, oip
from service.schemas import PredictRequest
from service.settings import Settings

INFER_PATHS = [route.path for route in oip.router.routes if getattr(route, "endpoint", None) is oip.infer]
PASSED = "ecg.lean_routes_passed"  # scope key: route past the lean routes, to FastAPI's


class LeanRoute(Route):
    """A Starlette route that, like FastAPI's, names itself in the scope (the metrics' route label)."""

    def matches(self, scope):
        if scope.get(PASSED):
            return Match.NONE, {}
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


class Replay:
    """An ASGI response that routes the request again, past the lean routes, with the body that
    was already read: FastAPI's own route answers it."""

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

        scope[PASSED] = True
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


async def predict(request: Request) -> Response:
    body = await request.body()
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
