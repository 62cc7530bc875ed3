"""The FastAPI application: create_app(settings) wires the routers (with their body limits), the
middleware, the error handlers and the lifespan that loads, verifies and warms every model, runs
their batchers and starts the strip workers."""

from __future__ import annotations

import gc
import json
import logging
from contextlib import asynccontextmanager

import numpy as np
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY
from starlette.requests import ClientDisconnect

from service.api import classify, oip, ops, viewer
from service.api.lean import LeanApp, lean_routes
from service.runtime.batching import Overloaded, Timeout
from service.errors import client_gone, problem, unexpected_error, validation_error
from service.admission.guard import Admitted, Guard
from service.runtime.inference import Inference
from service.metrics import ServiceMetrics
from service.admission.middleware import RequestBookkeeping
from service.models.registry import ModelRegistry
from service.schemas import StripRequest
from service.settings import Settings
from service.runtime.strip_worker import StripTask, StripWorkers, WorkerFailed

log = logging.getLogger("service.app")
MULTIPART_LIMITS = ("Too many files", "Too many fields", "Part exceeded maximum size")
WARM_UP_STRIP = StripTask("strip", body=json.dumps({"sampling_rate": 250, "signal": np.sin(
    np.arange(2500) * 2 * np.pi * 1.2 / 250).round(4).tolist()}).encode())


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        workers = StripWorkers(settings.strip_workers, settings.max_waiting_strips, settings.strip_overrun_s,
                               settings.strip_worker_rss_mib, settings.strip_worker_memory_mib)
        app.state.strip_workers = workers
        registry = ModelRegistry.load(settings.models_dir, settings.torch_threads)
        app.state.registry = registry
        for failure in registry.failures.values():
            log.error(json.dumps({"event": "model_refused", "error": failure}))
        try:
            await workers.start(warm_up=WARM_UP_STRIP)
            await run_in_threadpool(registry.warm_up)
            for loaded in registry.models.values():
                metrics.model_info.labels(loaded.name, loaded.version, loaded.predictor.backend).set(1)
            inference = Inference(settings, registry, metrics)
            inference.start()
            app.state.inference = inference
            # What startup built lives for good: frozen, collections need not walk it; and fewer
            # collections on the request path (64 single-beat clients: p99 190 ms -> under 50 ms).
            gc.freeze()
            gc.set_threshold(20_000, 50, 100)
            log.info(json.dumps({"event": "ready", "models": sorted(registry.models)}))
            yield
            await inference.stop()
        finally:
            await workers.stop()
            metrics.process_exited()

    async def overloaded(request, exc: Overloaded):
        return problem(503, f"overloaded: {exc}; retry later", settings.retry_after_s)

    async def worker_failed(request, exc: WorkerFailed):
        return problem(503, str(exc), settings.retry_after_s)

    async def timed_out(request, exc: Timeout):
        limit = request.state.timeout_s
        return problem(504, f"the request's deadline of {limit:g} s passed ({exc}); set a longer one with "
                            f"X-Request-Timeout (at most {settings.max_request_timeout_s:g} s)")

    async def http_error(request, exc: HTTPException):
        if isinstance(exc.__cause__, ClientDisconnect):  # FastAPI's "error parsing the body" for a client gone
            return await client_gone(request, exc.__cause__)
        if exc.status_code == 400 and str(exc.detail).startswith(MULTIPART_LIMITS):  # Starlette's form limits
            return problem(413, f"multipart body over its limits: {exc.detail}")
        if request.url.path.startswith("/v2") and exc.status_code != 413:  # the protocol's error form
            return oip.error_response(oip.OIPError(exc.status_code, str(exc.detail)), exc.headers)
        if exc.status_code != 413:
            return await http_exception_handler(request, exc)
        limit = request.scope.get(MAX_BODY_SIZE_SCOPE_KEY)
        response = problem(413, f"request body larger than this route's limit of {limit} bytes")
        response.headers["connection"] = "close"  # stop reading the rest of it
        return response

    app = LeanApp(
        title="ECG heartbeat classifier",
        version="1.1.0",
        description="Classifies ECG beats into the AAMI classes N, S, V, F, Q with ODE-Nets and ResNets "
                    "trained on MIT-BIH: 187-sample beats, context beats (window, template and RR "
                    "intervals) or whole strips; also over the Open Inference Protocol (/v2).",
        lifespan=lifespan,
        docs_url=None, redoc_url=None,  # served offline by service.api.viewer
        lean_routes=lean_routes(settings),
        exception_handlers={RequestValidationError: validation_error, Overloaded: overloaded,
                            WorkerFailed: worker_failed, Timeout: timed_out, HTTPException: http_error,
                            ClientDisconnect: client_gone, Exception: unexpected_error},
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.add_middleware(Guard, settings=settings, admitted=Admitted())  # one count for both stacks
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["authorization", "content-type", "x-api-key", "x-request-timeout",
                                          "x-request-id", "inference-header-content-length"],
                           expose_headers=["retry-after", "inference-header-content-length"])
    app.add_middleware(RequestBookkeeping, settings=settings, metrics=metrics)
    app.include_router(classify.router, max_body_size=settings.predict_body_bytes)
    app.include_router(classify.strips, max_body_size=settings.strip_body_bytes)
    app.include_router(classify.uploads, max_body_size=settings.upload_body_bytes,
                       form_limits={"max_files": 2, "max_fields": 0})
    app.include_router(oip.router, max_body_size=settings.predict_body_bytes)
    app.include_router(ops.router, max_body_size=settings.max_body_bytes)
    app.include_router(viewer.router, max_body_size=settings.max_body_bytes)

    def openapi() -> dict:
        """FastAPI's schema, plus the StripRequest body that /predict/strip reads in its workers."""
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            strip = StripRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            schema["components"]["schemas"].update(strip.pop("$defs", {}))
            schema["components"]["schemas"]["StripRequest"] = strip
            state_solver_bounds(schema, settings)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app


def state_solver_bounds(schema: dict, settings: Settings) -> None:
    """The schema states the bounds the service enforces (settings), not only the type's (0, 1]."""
    bounds = {"rtol": (settings.min_tolerance, settings.max_tolerance),
              "atol": (settings.min_tolerance, settings.max_tolerance), "step_size": (settings.min_step_size, 1.0)}

    def bound(node: dict, name: str) -> None:
        for option in [node, *node.get("anyOf", [])]:
            if option.get("type") == "number":
                option.pop("exclusiveMinimum", None)
                option["minimum"], option["maximum"] = bounds[name]

    solver = schema["components"]["schemas"].get("SolverRequest", {}).get("properties", {})
    for name in bounds:
        if name in solver:
            bound(solver[name], name)
    for path in schema["paths"].values():
        for operation in path.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "query" and parameter["name"] in bounds:
                    bound(parameter["schema"], parameter["name"])
