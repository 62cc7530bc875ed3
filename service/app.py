"""The FastAPI application: create_app(settings) wires routes, metrics and the model lifespan."""

from __future__ import annotations

import json
import logging
import time
from contextlib import asynccontextmanager

import numpy as np
import torch
from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.beats import CLASSES
from service.metrics import ServiceMetrics
from service.networks import FIXED_STEP_METHODS, SolverConfig, SolverStepLimitError
from service.registry import LoadedModel, ModelRegistry
from service.schemas import BeatPrediction, PredictRequest, PredictResponse, SolverReport
from service.settings import Settings

log = logging.getLogger("service.requests")
MAX_ERRORS = 20


def invalid(field: tuple, message: str, value=None) -> RequestValidationError:
    """A 422 in FastAPI's own error format, for checks that depend on settings or loaded models."""
    return RequestValidationError([{"type": "value_error", "loc": ("body", *field), "msg": message,
                                    "input": value}])


def _printable(value) -> bool:
    """Echo back only short, JSON-safe inputs: never NaN/inf, never a whole beat array."""
    if isinstance(value, float):
        return bool(np.isfinite(value))
    return isinstance(value, (int, bool, type(None))) or (isinstance(value, str) and len(value) <= 100)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 body, minus inputs that cannot or should not be echoed."""
    detail = []
    for error in exc.errors()[:MAX_ERRORS]:
        item = {"type": error["type"], "loc": list(error["loc"]), "msg": error["msg"]}
        if _printable(error.get("input")):
            item["input"] = error.get("input")
        detail.append(item)
    if len(exc.errors()) > MAX_ERRORS:
        detail.append({"type": "truncated", "loc": ["body"],
                       "msg": f"{len(exc.errors()) - MAX_ERRORS} more errors not shown"})
    return JSONResponse({"detail": detail}, status_code=422)


def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def solver_for(body: PredictRequest, loaded: LoadedModel, settings: Settings) -> SolverConfig | None:
    """Validate the request's solver settings against the model and the service's bounds."""
    if not loaded.predictor.is_ode:
        if body.solver is not None:
            raise invalid(("solver",), f"model {loaded.name!r} is not an ODE model; omit 'solver'")
        return None
    requested = body.solver.model_dump(exclude_unset=True) if body.solver else {}
    default = {k: v for k, v in loaded.card.get("default_solver", {}).items()
               if k in ("method", "rtol", "atol")}
    cfg = SolverConfig(**{**default, **requested, "max_num_steps": settings.max_num_steps})
    for name in ("rtol", "atol"):
        value = getattr(cfg, name)
        if not settings.min_tolerance <= value <= settings.max_tolerance:
            raise invalid(("solver", name), f"{name} must be within [{settings.min_tolerance:g}, "
                          f"{settings.max_tolerance:g}]", value)
    if cfg.step_size is not None:
        if cfg.method not in FIXED_STEP_METHODS:
            raise invalid(("solver", "step_size"), f"step_size applies to fixed-step methods "
                          f"({', '.join(FIXED_STEP_METHODS)}), not {cfg.method}", cfg.step_size)
        if cfg.step_size < settings.min_step_size:
            raise invalid(("solver", "step_size"), f"step_size must be at least {settings.min_step_size:g}",
                          cfg.step_size)
    return cfg


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        registry = ModelRegistry.load(settings.models_dir, settings.torch_threads)
        app.state.registry = registry
        for failure in registry.failures.values():
            log.error(json.dumps({"event": "model_refused", "error": failure}))
        await run_in_threadpool(registry.warm_up)
        for loaded in registry.models.values():
            metrics.model_info.labels(loaded.name, loaded.version, loaded.predictor.backend).set(1)
        log.info(json.dumps({"event": "ready", "models": sorted(registry.models)}))
        yield

    app = FastAPI(
        title="ECG heartbeat classifier",
        version="1.0.0",
        description="Classifies ECG beats (187 samples at 125 Hz, [0, 1]) into the AAMI classes "
                    "N, S, V, F, Q with an ODE-Net or a ResNet trained on MIT-BIH.",
        lifespan=lifespan,
        exception_handlers={RequestValidationError: validation_error},
    )
    app.state.settings = settings
    app.state.metrics = metrics

    @app.middleware("http")
    async def observe(request: Request, call_next):
        metrics.in_flight.inc()
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            elapsed = time.perf_counter() - started
            metrics.in_flight.dec()
            route = request.scope.get("route")
            template = getattr(route, "path", "unmatched")
            metrics.http_duration.labels(template, request.method, str(status)).observe(elapsed)
            entry = {"event": "request", "method": request.method, "route": template,
                     "status": status, "duration_ms": round(1000 * elapsed, 3)}
            entry.update(getattr(request.state, "log", {}))
            log.info(json.dumps(entry))

    @app.post("/predict", response_model=PredictResponse, tags=["classify"],
              responses={422: {"description": "invalid beats, model or solver settings"},
                         503: {"description": "models not loaded yet"}})
    async def predict(body: PredictRequest, request: Request,
                      registry: ModelRegistry = Depends(get_registry),
                      settings: Settings = Depends(get_settings)) -> PredictResponse:
        """Classify beats; `solver` tunes the ODE-Net's accuracy/latency trade-off."""
        name = body.model or settings.default_model
        loaded = registry.models.get(name)
        if loaded is None:
            raise invalid(("model",), f"unknown model {name!r}; available: {', '.join(sorted(registry.models))}",
                          name)
        if len(body.beats) > settings.max_beats_per_request:
            raise invalid(("beats",), f"at most {settings.max_beats_per_request} beats per request, "
                          f"got {len(body.beats)}")
        solver = solver_for(body, loaded, settings)
        beats = np.asarray(body.beats, dtype=np.float32)
        try:
            result = await run_in_threadpool(loaded.predictor.predict, beats, solver)
        except SolverStepLimitError as err:
            raise invalid(("solver",), f"{err}; loosen rtol/atol or use a fixed-step method") from err
        labels = result.probabilities.argmax(axis=1)
        metrics.inference_latency.labels(name).observe(result.seconds)
        metrics.batch_size.labels(name).observe(len(beats))
        for index, count in zip(*np.unique(labels, return_counts=True)):
            metrics.beats.labels(name, CLASSES[index]).inc(int(count))
        report = None
        if solver is not None:
            metrics.ode_nfe.labels(name, solver.method).observe(result.nfe)
            report = SolverReport(method=solver.method, rtol=solver.rtol, atol=solver.atol,
                                  step_size=solver.step_size, nfe=result.nfe)
        request.state.log = {"model": name, "beats": len(beats), "nfe": result.nfe}
        return PredictResponse(
            model=name, version=loaded.version, solver=report, latency_ms=1000 * result.seconds,
            predictions=[
                BeatPrediction(label=CLASSES[i], class_index=int(i),
                               probabilities={c: float(p) for c, p in zip(CLASSES, row)})
                for i, row in zip(labels, result.probabilities)
            ],
        )

    @app.get("/models", tags=["models"])
    async def models(registry: ModelRegistry = Depends(get_registry)) -> dict:
        """Cards of the loaded models: version, classes, metrics, default solver; and refusals."""
        return {"models": {name: {"backend": m.predictor.backend, **m.card} for name, m in registry.models.items()},
                "refused": registry.failures}

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz(request: Request) -> JSONResponse:
        """Readiness: every artefact verified, loaded and warmed up."""
        registry: ModelRegistry | None = getattr(request.app.state, "registry", None)
        if registry is None or not registry.ready:
            detail = registry.failures if registry else {"*": "loading"}
            return JSONResponse({"status": "not ready", "refused": detail}, status_code=503)
        return JSONResponse({"status": "ready", "models": sorted(registry.models)})

    @app.get("/metrics", tags=["health"], response_class=Response)
    async def prometheus_metrics() -> Response:
        """Prometheus exposition format."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
