"""Operations: the front page (links to the viewer and the docs), the loaded models' cards,
liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.models.recommended import model_use
from service.models.registry import ModelRegistry

router = APIRouter()
FRONT_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<link rel="icon" href="data:,"></head><body style="font: 15px/1.5 system-ui, sans-serif; margin: 2rem">
<h1>{title} {version}</h1><ul>
<li><a href="viewer/">viewer</a>: upload a WFDB record or a CSV strip, or open the example</li>
<li><a href="docs">API docs</a> (Swagger UI) · <a href="redoc">ReDoc</a> · <a href="openapi.json">openapi.json</a></li>
<li><a href="models">models</a> · <a href="readyz">readiness</a> · <a href="metrics">metrics</a></li>
</ul></body></html>"""


@router.get("/", include_in_schema=False, response_class=HTMLResponse)
async def front_page(request: Request) -> HTMLResponse:
    """Links to the viewer, the API docs and the operational routes (relative, for any root path)."""
    return HTMLResponse(FRONT_PAGE.format(title=request.app.title, version=request.app.version))


@router.get("/models", tags=["models"])
async def models(request: Request) -> dict:
    """Cards of the loaded models (version, input, classes, metrics, default solver), whether each is
    recommended and what for, and refusals."""
    registry: ModelRegistry = request.app.state.registry
    return {"models": {name: {"backend": m.predictor.backend, "input_kind": m.input_kind,
                              "input_size": m.input_size, **m.card, **model_use(name)}
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
