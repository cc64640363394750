"""The web dashboard: `GET /dashboard` serves a small single-page app (plain HTML, CSS and JS in
`static/`, no build step, nothing fetched from a CDN) that talks to the /v1 API from the browser.

The page and its assets hold no data, so they are served without a key; every request for data
goes to the API with the key the user typed in (kept in the browser's localStorage), so the
dashboard sees exactly what that key's project sees. Routes here:

    GET /                      -> redirect to /dashboard/
    GET /dashboard[/]          the app (hash routes: #/jobs, #/jobs/{id}, #/compare, #/new)
    GET /dashboard/static/{f}  its assets, from a fixed list
    GET /dashboard/api/models  the names in the operator's model registry (behind the API keys)
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from service.api.auth import CallerDep
from service.api.deps import Registry
from service.api.errors import not_found

STATIC = Path(__file__).resolve().parent / "static"
# The script is ES modules (app.js imports the rest), and a browser runs a module only when it is
# served with a JavaScript type. static/ stays flat: each asset is one path segment, so `{name}`
# below never holds a `/` and the package data glob (`static/*`) ships every file.
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
# Only these names are ever served: no user text becomes a path.
ASSETS = {p.name: p for p in STATIC.iterdir() if p.suffix in _TYPES and p.name != "index.html"}
_NO_CACHE = {"Cache-Control": "no-cache"}  # revalidate: an upgraded service serves new assets at once

router = APIRouter(include_in_schema=False)


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/dashboard/", status_code=307)


@router.get("/dashboard")
@router.get("/dashboard/")
def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type=_TYPES[".html"], headers=_NO_CACHE)


@router.get("/dashboard/static/{name}")
def asset(name: str) -> FileResponse:
    path = ASSETS.get(name)
    if path is None:
        raise not_found("file", name, param="name")
    return FileResponse(path, media_type=_TYPES[path.suffix], headers=_NO_CACHE)


@router.get("/dashboard/api/models")
def models(registry: Registry, _: CallerDep) -> dict:
    """The model names a job may use (the API has no models endpoint; this one is the dashboard's)."""
    data = [{"id": name, "object": "model", "kind": registry.get(name).kind,
             "description": registry.get(name).description} for name in registry.names()]
    return {"object": "list", "data": data}
