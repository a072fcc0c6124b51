"""`dashboard_router(authorize=...)`: a live HTML dashboard and its JSON endpoints."""

# No `from __future__ import annotations`: FastAPI must resolve the route closures' annotations.
import base64
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse, JSONResponse

from .. import Runtime
from . import _snapshot
from ._deps import get_runtime
from ._failures import failure_log

#: What to write when the dashboard is mounted without an `authorize` dependency.
_AUTHORIZE_REQUIRED = (
    "dashboard_router() needs authorize=<a FastAPI dependency>: the dashboard shows what your"
    " service is doing, so it is closed by default. Pass a dependency that raises"
    " HTTPException(401 or 403) for requests that may not see it, e.g."
    " dashboard_router(authorize=require_admin); for a trusted local setup only,"
    " authorize=lambda: None opens it explicitly."
)

_NO_STORE = {"Cache-Control": "no-store"}


@dataclass(frozen=True)
class _Page:
    """The self-contained HTML page: CSS and JS inlined, allowed by hash in its CSP."""

    html: str
    headers: dict[str, str]

    @classmethod
    def build(cls, refresh_seconds: float) -> "_Page":
        css, js = _asset("dashboard.css"), _asset("dashboard.js")
        html = (
            _asset("dashboard.html")
            .replace("@REFRESH_MS@", str(max(1, round(refresh_seconds * 1000))))
            .replace("/*@STYLE@*/", css)
            .replace("/*@SCRIPT@*/", js)
        )
        csp = "; ".join(
            [
                "default-src 'none'",
                f"script-src '{_sha256(js)}'",
                f"style-src '{_sha256(css)}'",
                "connect-src 'self'",
                "img-src data:",
                "base-uri 'none'",
                "form-action 'none'",
                "frame-ancestors 'none'",
            ]
        )
        headers = {
            **_NO_STORE,
            "Content-Security-Policy": csp,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        }
        return cls(html=html, headers=headers)


def dashboard_router(
    authorize: Callable[..., Any] | None = None,
    *,
    runtime: Runtime | None = None,
    show_args: bool = False,
    max_items: int = 200,
    refresh_seconds: float = 1.0,
) -> APIRouter:
    """An APIRouter serving the offload dashboard; mount it with a prefix:

        app.include_router(dashboard_router(authorize=require_admin), prefix="/offload")

    `authorize` is required: a FastAPI dependency run before every dashboard route
    (the page and the JSON under `api/`), which raises `HTTPException(401/403)` to refuse.
    `runtime` defaults to the app's (see `offload.fastapi.lifespan`). Task arguments are
    never shown unless `show_args=True`; the page polls `api/snapshot` every
    `refresh_seconds`. Failures come from the `offload` logger (see `failure_log`).
    """
    if authorize is None:
        raise TypeError(_AUTHORIZE_REQUIRED)
    if not callable(authorize):
        raise TypeError(f"authorize must be a FastAPI dependency (a callable), not {authorize!r}")
    if max_items < 1:
        raise ValueError(f"max_items must be >= 1, got {max_items}")
    if refresh_seconds <= 0:
        raise ValueError(f"refresh_seconds must be > 0, got {refresh_seconds}")
    page = _Page.build(refresh_seconds)
    router = APIRouter(dependencies=[Depends(authorize)], include_in_schema=False)
    _add_routes(router, page, _runtime_dependency(runtime), show_args, max_items)
    return router


def _runtime_dependency(runtime: Runtime | None) -> Callable[..., Awaitable[Runtime]]:
    if runtime is None:
        return get_runtime

    async def fixed_runtime() -> Runtime:
        return runtime

    return fixed_runtime


def _add_routes(
    router: APIRouter,
    page: _Page,
    runtime_dependency: Callable[..., Awaitable[Runtime]],
    show_args: bool,
    max_items: int,
) -> None:
    failures = failure_log()
    Rt = Annotated[Runtime, Depends(runtime_dependency)]
    Limit = Annotated[int, Query(ge=1, le=max_items)]

    @router.get("/", response_class=HTMLResponse)
    async def dashboard_page() -> HTMLResponse:
        return HTMLResponse(page.html, headers=page.headers)

    @router.get("/api/snapshot")
    async def dashboard_snapshot(rt: Rt, limit: Limit = max_items) -> JSONResponse:
        data = _snapshot.snapshot(rt, failures, show_args=show_args, limit=limit)
        return JSONResponse(data, headers=_NO_STORE)

    @router.get("/api/stats")
    async def dashboard_stats(rt: Rt) -> JSONResponse:
        return JSONResponse(_snapshot.lanes(rt), headers=_NO_STORE)

    @router.get("/api/tasks")
    async def dashboard_tasks(rt: Rt, limit: Limit = max_items) -> JSONResponse:
        data = _snapshot.tasks(rt, show_args=show_args, limit=limit)
        return JSONResponse(data, headers=_NO_STORE)

    @router.get("/api/failures")
    async def dashboard_failures(limit: Limit = max_items) -> JSONResponse:
        return JSONResponse(_snapshot.failures(failures, limit=limit), headers=_NO_STORE)


def _asset(name: str) -> str:
    return (resources.files("offload.fastapi") / "static" / name).read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "sha256-" + base64.b64encode(digest).decode("ascii")
