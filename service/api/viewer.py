"""The browser pages the service serves itself, with nothing fetched from the internet (a hospital
network is often offline): the ECG viewer at /viewer (plain HTML, JavaScript and canvas from
service/static/) and the API docs at /docs and /redoc, whose Swagger UI and ReDoc assets come from
the fastapi-offline package instead of a CDN."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.routing import Match, Mount

STATIC = Path(__file__).resolve().parents[1] / "static"
DOC_ASSETS = Path(str(files("fastapi_offline") / "static"))


class NamedMount(Mount):
    """A mount that names itself in the scope, as routes do: its files' requests are counted under
    the mount's path (the metrics' route label), not as "unmatched"."""

    def matches(self, scope):
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


router = APIRouter(include_in_schema=False)
router.routes.append(NamedMount("/viewer", StaticFiles(directory=STATIC, html=True), name="viewer"))
router.routes.append(NamedMount("/docs/assets", StaticFiles(directory=DOC_ASSETS), name="docs-assets"))


@router.get("/viewer")
async def viewer() -> RedirectResponse:
    """The viewer's page lives at /viewer/, so that its relative links (assets, the example, the
    strip endpoints) resolve under any root path."""
    return RedirectResponse("viewer/", status_code=307)


def base_of(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/")


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI, from local assets."""
    base = base_of(request)
    return get_swagger_ui_html(openapi_url=base + request.app.openapi_url, title=f"{request.app.title} - docs",
                               swagger_js_url=f"{base}/docs/assets/swagger-ui-bundle.js",
                               swagger_css_url=f"{base}/docs/assets/swagger-ui.css",
                               swagger_favicon_url=f"{base}/docs/assets/favicon.png",
                               oauth2_redirect_url=f"{base}/docs/oauth2-redirect")


@router.get("/docs/oauth2-redirect")
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc, from local assets and without web fonts."""
    base = base_of(request)
    return get_redoc_html(openapi_url=base + request.app.openapi_url, title=f"{request.app.title} - ReDoc",
                          redoc_js_url=f"{base}/docs/assets/redoc.standalone.js",
                          redoc_favicon_url=f"{base}/docs/assets/favicon.png", with_google_fonts=False)
