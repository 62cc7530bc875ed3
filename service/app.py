"""The FastAPI application: create_app(settings) wires routes, metrics and the model lifespan."""

from __future__ import annotations

import json
import logging
import time
from contextlib import asynccontextmanager
from typing import Annotated

import numpy as np
import torch
from fastapi import Body, Depends, FastAPI, File, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.beats import CLASSES
from service.metrics import ServiceMetrics
from service.formats import Lead, read_fhir, read_wfdb
from service.networks import FIXED_STEP_METHODS, SolverConfig, SolverStepLimitError
from service.registry import LoadedModel, ModelRegistry
from service.schemas import (
    BeatPrediction, PredictRequest, PredictResponse, SolverReport, SolverRequest, StripBeat, StripRequest,
    StripResponse, StripSummary, UploadOptions,
)
from service.settings import Settings
from service.strips import StripError, strip_beats

log = logging.getLogger("service.requests")
MAX_ERRORS = 20
MAX_HEADER_BYTES = 64 * 1024
MAX_SIGNAL_BYTES = 64 * 1024 * 1024  # 30 min of 12 leads at 1000 Hz in format 212 is 32 MB


async def read_upload(upload: UploadFile, limit: int, field: str) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise invalid(("body", field), f"{field} file is larger than {limit // 1024} KiB")
    return data


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


def solver_for(requested_solver: SolverRequest | None, loaded: LoadedModel, settings: Settings,
               where: tuple = ("body", "solver")) -> SolverConfig | None:
    """Validate the request's solver settings against the model and the service's bounds."""
    if not loaded.predictor.is_ode:
        if requested_solver is not None:
            raise invalid(where, f"model {loaded.name!r} is not an ODE model; omit the solver settings")
        return None
    requested = requested_solver.model_dump(exclude_unset=True) if requested_solver else {}
    default = {k: v for k, v in loaded.card.get("default_solver", {}).items()
               if k in ("method", "rtol", "atol")}
    cfg = SolverConfig(**{**default, **requested, "max_num_steps": settings.max_num_steps})
    for name in ("rtol", "atol"):
        value = getattr(cfg, name)
        if not settings.min_tolerance <= value <= settings.max_tolerance:
            raise invalid((*where, name), f"{name} must be within [{settings.min_tolerance:g}, "
                          f"{settings.max_tolerance:g}]", value)
    if cfg.step_size is not None:
        if cfg.method not in FIXED_STEP_METHODS:
            raise invalid((*where, "step_size"), f"step_size applies to fixed-step methods "
                          f"({', '.join(FIXED_STEP_METHODS)}), not {cfg.method}", cfg.step_size)
        if cfg.step_size < settings.min_step_size:
            raise invalid((*where, "step_size"), f"step_size must be at least {settings.min_step_size:g}",
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

    def resolve(name: str | None, registry: ModelRegistry, where: tuple) -> LoadedModel:
        name = name or settings.default_model
        loaded = registry.models.get(name)
        if loaded is None:
            raise invalid(where, f"unknown model {name!r}; available: {', '.join(sorted(registry.models))}", name)
        return loaded

    async def classify(loaded: LoadedModel, beats: np.ndarray, solver: SolverConfig | None, request: Request,
                       solver_loc: tuple = ("body", "solver")) -> tuple[np.ndarray, int | None, float]:
        """Probabilities of `beats` in chunks of at most max_beats_per_request; total NFE; seconds."""
        probabilities, nfe, seconds = [], 0, 0.0
        for start in range(0, len(beats), settings.max_beats_per_request):
            chunk = beats[start:start + settings.max_beats_per_request]
            try:
                result = await run_in_threadpool(loaded.predictor.predict, chunk, solver)
            except SolverStepLimitError as err:
                raise invalid(solver_loc, f"{err}; loosen rtol/atol or use a fixed-step method") from err
            probabilities.append(result.probabilities)
            seconds += result.seconds
            metrics.inference_latency.labels(loaded.name).observe(result.seconds)
            metrics.batch_size.labels(loaded.name).observe(len(chunk))
            if solver is not None:
                metrics.ode_nfe.labels(loaded.name, solver.method).observe(result.nfe)
                nfe += result.nfe
        probabilities = np.concatenate(probabilities) if probabilities else np.zeros((0, len(CLASSES)))
        labels = probabilities.argmax(axis=1)
        for index, count in zip(*np.unique(labels, return_counts=True)):
            metrics.beats.labels(loaded.name, CLASSES[index]).inc(int(count))
        total_nfe = nfe if solver is not None else None
        request.state.log = {"model": loaded.name, "beats": len(beats), "nfe": total_nfe}
        return probabilities, total_nfe, seconds

    def solver_report(solver: SolverConfig | None, nfe: int | None) -> SolverReport | None:
        if solver is None:
            return None
        return SolverReport(method=solver.method, rtol=solver.rtol, atol=solver.atol,
                            step_size=solver.step_size, nfe=nfe)

    def probabilities_of(row: np.ndarray) -> dict[str, float]:
        return {c: float(p) for c, p in zip(CLASSES, row)}

    @app.post("/predict", response_model=PredictResponse, tags=["classify"],
              responses={422: {"description": "invalid beats, model or solver settings"}})
    async def predict(body: PredictRequest, request: Request,
                      registry: ModelRegistry = Depends(get_registry)) -> PredictResponse:
        """Classify beats; `solver` tunes the ODE-Net's accuracy/latency trade-off."""
        loaded = resolve(body.model, registry, ("body", "model"))
        if len(body.beats) > settings.max_beats_per_request:
            raise invalid(("body", "beats"), f"at most {settings.max_beats_per_request} beats per request, "
                          f"got {len(body.beats)}")
        solver = solver_for(body.solver, loaded, settings)
        probabilities, nfe, seconds = await classify(
            loaded, np.asarray(body.beats, dtype=np.float32), solver, request)
        return PredictResponse(
            model=loaded.name, version=loaded.version, solver=solver_report(solver, nfe),
            latency_ms=1000 * seconds,
            predictions=[BeatPrediction(label=CLASSES[i], class_index=int(i), probabilities=probabilities_of(row))
                         for i, row in zip(probabilities.argmax(axis=1), probabilities)],
        )

    async def analyse(lead: Lead, loaded: LoadedModel, solver: SolverConfig | None, request: Request,
                      samples_loc: tuple, solver_loc: tuple = ("body", "solver")) -> StripResponse:
        """Strip -> R-peaks -> beats (the training code) -> labels, with a summary."""
        try:
            found = await run_in_threadpool(strip_beats, lead.signal_mv, lead.fs)
        except StripError as err:
            raise strip_invalid(err, samples_loc) from None
        probabilities, nfe, seconds = await classify(loaded, found.beats, solver, request, solver_loc)
        labels = probabilities.argmax(axis=1)
        rr = np.diff(found.peaks) / lead.fs
        return StripResponse(
            model=loaded.name, version=loaded.version, solver=solver_report(solver, nfe),
            latency_ms=1000 * seconds, reason=found.reason,
            beats=[StripBeat(sample=int(p), time_s=float(p / lead.fs), label=CLASSES[i], class_index=int(i),
                             probabilities=probabilities_of(row))
                   for p, i, row in zip(found.peaks, labels, probabilities)],
            summary=StripSummary(
                n_beats=len(labels), counts={c: int(np.sum(labels == k)) for k, c in enumerate(CLASSES)},
                mean_heart_rate_bpm=float(60.0 / rr.mean()) if rr.size else None,
                duration_s=lead.signal_mv.size / lead.fs, sampling_rate=lead.fs, lead=lead.name),
        )

    @app.post("/predict/strip", response_model=StripResponse, tags=["classify"],
              responses={422: {"description": "invalid strip, model or solver settings"}})
    async def predict_strip(body: StripRequest, request: Request,
                            registry: ModelRegistry = Depends(get_registry)) -> StripResponse:
        """Classify every beat of one lead of raw ECG (10 s to 60 min, 100-1000 Hz, mV or ADC units)."""
        loaded = resolve(body.model, registry, ("body", "model"))
        solver = solver_for(body.solver, loaded, settings)
        signal = np.asarray(body.signal, dtype=np.float64)
        if body.units == "adc":
            if body.gain is None:
                raise invalid(("body", "gain"), "units 'adc' need the gain (ADC units per mV)")
            signal = (signal - body.baseline) / body.gain
        return await analyse(Lead(signal, body.sampling_rate, None), loaded, solver, request, ("body", "signal"))

    @app.post("/predict/wfdb", response_model=StripResponse, tags=["classify"],
              responses={422: {"description": "malformed record, unknown lead, bad options"}})
    async def predict_wfdb(request: Request, options: Annotated[UploadOptions, Query()],
                           header: UploadFile = File(..., description="the record's .hea file"),
                           signal: UploadFile = File(..., description="the signal file the header names"),
                           registry: ModelRegistry = Depends(get_registry)) -> StripResponse:
        """Classify a WFDB record (multipart upload of header and signal file); choose the lead by name."""
        loaded = resolve(options.model, registry, ("query", "model"))
        solver = solver_for(options.solver(), loaded, settings, where=("query",))
        try:
            lead = read_wfdb(await read_upload(header, MAX_HEADER_BYTES, "header"),
                             await read_upload(signal, MAX_SIGNAL_BYTES, "signal"), options.lead)
        except StripError as err:
            raise strip_invalid(err, ("body", "signal")) from None
        return await analyse(lead, loaded, solver, request, ("body", "signal"), ("query",))

    @app.post("/predict/fhir", response_model=StripResponse, tags=["classify"],
              responses={422: {"description": "malformed Observation, unknown lead, bad options"}})
    async def predict_fhir(request: Request, options: Annotated[UploadOptions, Query()],
                           observation: dict = Body(..., description="an HL7 FHIR R4 Observation with valueSampledData"),
                           registry: ModelRegistry = Depends(get_registry)) -> StripResponse:
        """Classify the ECG in a FHIR R4 Observation (valueSampledData, or one component per lead)."""
        loaded = resolve(options.model, registry, ("query", "model"))
        solver = solver_for(options.solver(), loaded, settings, where=("query",))
        try:
            lead = read_fhir(observation, options.lead)
        except StripError as err:
            raise strip_invalid(err, ("body", "observation")) from None
        return await analyse(lead, loaded, solver, request, ("body", "observation"), ("query",))

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
