"""`dashboard_router(authorize=...)`: a live HTML dashboard and its JSON endpoints.

The page (static/: HTML, CSS, JS with hand-drawn SVG charts, all inlined) polls
`api/snapshot`; the charts' history is sampled server-side (see `_history`), from the
app's startup when FastAPI runs routers' lifespans, else from the first request.
The same sampler reads the durable queue's depths (off the event loop) for the page's
"Durable queue" panel, shown only when the runtime's durable tier is in use.
"""

# No `from __future__ import annotations`: FastAPI must resolve the route closures' annotations.
import base64
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.requests import Request

from .. import Runtime
from . import _snapshot
from ._deps import get_runtime, runtime_of
from ._failures import failure_log
from ._history import Samplers, checked_interval

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
    sample_seconds: float = 1.0,
    history_seconds: float = 900.0,
) -> APIRouter:
    """An APIRouter serving the offload dashboard; mount it with a prefix:

        app.include_router(dashboard_router(authorize=require_admin), prefix="/offload")

    `authorize` is required: a FastAPI dependency run before every dashboard route
    (the page and the JSON under `api/`), which raises `HTTPException(401/403)` to refuse.
    `runtime` defaults to the app's (see `offload.fastapi.lifespan`). Task arguments are
    never shown unless `show_args=True`; the page polls `api/snapshot` every
    `refresh_seconds`. Failures come from the `offload` logger (see `failure_log`).
    The charts show the last `history_seconds` of per-lane samples taken every
    `sample_seconds` (at most history_seconds / sample_seconds samples are kept).
    """
    if authorize is None:
        raise TypeError(_AUTHORIZE_REQUIRED)
    if not callable(authorize):
        raise TypeError(f"authorize must be a FastAPI dependency (a callable), not {authorize!r}")
    if max_items < 1:
        raise ValueError(f"max_items must be >= 1, got {max_items}")
    refresh_seconds = checked_interval("refresh_seconds", refresh_seconds)
    sample_seconds = checked_interval("sample_seconds", sample_seconds, minimum=0.01)
    history_seconds = checked_interval("history_seconds", history_seconds)
    if history_seconds < sample_seconds:
        raise ValueError(
            f"history_seconds ({history_seconds:g}) must be >= sample_seconds ({sample_seconds:g})"
        )
    page = _Page.build(refresh_seconds)
    samplers = Samplers(sample_seconds, history_seconds)
    router = APIRouter(
        dependencies=[Depends(authorize)],
        include_in_schema=False,
        lifespan=_sampling(samplers, runtime),
    )
    _add_routes(router, page, _runtime_dependency(runtime), samplers, show_args, max_items)
    return router


def _sampling(samplers: Samplers, runtime: Runtime | None) -> Callable[[Any], Any]:
    """The router's lifespan (merged into the app's by FastAPI): sample from startup on."""

    @asynccontextmanager
    async def sampling(app: Any) -> AsyncIterator[None]:
        sampled = runtime if runtime is not None else runtime_of(app)
        samplers.history(sampled)
        try:
            yield
        finally:
            samplers.stop(sampled, timeout=10.0)

    return sampling


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
    samplers: Samplers,
    show_args: bool,
    max_items: int,
) -> None:
    failures = failure_log()
    Rt = Annotated[Runtime, Depends(runtime_dependency)]
    Limit = Annotated[int, Query(ge=1, le=max_items)]
    After = Annotated[int, Query(ge=0, description="only samples after this seq")]

    @router.get("/", response_class=HTMLResponse)
    async def dashboard_page() -> HTMLResponse:
        return HTMLResponse(page.html, headers=page.headers)

    @router.get("/api/snapshot")
    async def dashboard_snapshot(
        rt: Rt, limit: Limit = max_items, after: After = 0
    ) -> JSONResponse:
        data = _snapshot.snapshot(rt, failures, show_args=show_args, limit=limit)
        history = samplers.history(rt)
        data["history"] = history.since(after)
        data["durable"] = _snapshot.durable(rt, history.durable())
        return JSONResponse(data, headers=_NO_STORE)

    @router.get("/api/history")
    async def dashboard_history(rt: Rt, after: After = 0) -> JSONResponse:
        return JSONResponse(samplers.history(rt).since(after), headers=_NO_STORE)

    @router.get("/api/schedules")
    async def dashboard_schedules(rt: Rt, limit: Limit = max_items) -> JSONResponse:
        return JSONResponse(_snapshot.schedules(rt, limit=limit), headers=_NO_STORE)

    @router.get("/api/task/{task_id}")
    async def dashboard_task(rt: Rt, task_id: int) -> JSONResponse:
        data = _snapshot.task(rt, task_id, failures)
        if data is None:
            detail = f"no task with id {task_id} (unknown, or finished and no longer kept)"
            return JSONResponse({"detail": detail, "id": task_id}, 404, headers=_NO_STORE)
        return JSONResponse(data, headers=_NO_STORE)

    @router.get("/task/{task_id}")
    async def dashboard_task_page(task_id: int, request: Request) -> RedirectResponse:
        # The page is one document; its task view is the fragment #task/<id>. Relative, so
        # any mount prefix works; the query string (e.g. a token) goes along.
        query = f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse(f"../{query}#task/{task_id}", status_code=303)

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
