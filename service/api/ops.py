"""Operations: the loaded models' cards, liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.models.registry import ModelRegistry

router = APIRouter()


@router.get("/models", tags=["models"])
async def models(request: Request) -> dict:
    """Cards of the loaded models (version, input, classes, metrics, default solver) and refusals."""
    registry: ModelRegistry = request.app.state.registry
    return {"models": {name: {"backend": m.predictor.backend, "input_kind": m.input_kind,
                              "input_size": m.input_size, **m.card}
                       for name, m in registry.models.items()},
            "refused": registry.failures}


@router.get("/healthz", tags=["health"])
async def healthz() -> dict:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", tags=["health"])
async def readyz(request: Request) -> JSONResponse:
    """Readiness: every artefact verified, loaded and warmed up, and not draining."""
    registry: ModelRegistry | None = getattr(request.app.state, "registry", None)
    if getattr(request.app.state, "draining", False):
        return JSONResponse({"status": "draining"}, status_code=503)
    if registry is None or not registry.ready:
        detail = registry.failures if registry else {"*": "loading"}
        return JSONResponse({"status": "not ready", "refused": detail}, status_code=503)
    return JSONResponse({"status": "ready", "models": sorted(registry.models)})


@router.get("/metrics", tags=["health"], response_class=Response)
async def prometheus_metrics(request: Request) -> Response:
    """Prometheus exposition format."""
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
