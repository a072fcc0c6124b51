"""`status_router(dependencies=[...])`: task status as JSON, for `GET /jobs/{id}` endpoints.

Reads `runtime.get(task_id)` and `runtime.tasks(...)`: live tasks and the `keep_finished`
most recent finished ones (a Runtime option), as `offload.TaskInfo.as_dict()`.
"""

# No `from __future__ import annotations`: FastAPI must resolve the route closures' annotations.
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi import params as fastapi_params
from fastapi.responses import JSONResponse

from .. import Runtime
from ..durable._store import StoreError
from . import _durable
from ._deps import get_runtime

#: What to write when the router is made without `dependencies`.
_DEPENDENCIES_REQUIRED = (
    "status_router() needs dependencies=[Depends(<a FastAPI dependency>)]: task status"
    " (names, keys, error messages) shows what your service is doing, so it is closed by"
    " default. Pass a dependency that raises HTTPException(401 or 403) for requests that may"
    " not see it, e.g. status_router(dependencies=[Depends(require_admin)]); for a trusted"
    " local setup only, dependencies=[Depends(lambda: None)] opens it explicitly."
)

_NO_STORE = {"Cache-Control": "no-store"}

State = Literal["scheduled", "pending", "running", "retrying", "succeeded", "failed", "cancelled"]
Lane = Literal["loop", "background", "threads", "processes"]
DurableState = Literal["queued", "running", "succeeded", "dead", "cancelled"]


def status_router(
    runtime: Runtime | None = None,
    *,
    dependencies: Sequence[Any] | None = None,
    prefix: str = "/tasks",
    max_limit: int = 1000,
) -> APIRouter:
    """An APIRouter answering `GET {prefix}/{task_id}` and `GET {prefix}` with JSON:

        app.include_router(status_router(dependencies=[Depends(require_user)], prefix="/jobs"))

    `GET /jobs/812` gives the task's id, name, lane, state, attempt, key, timings (epoch
    seconds: submitted_at, started_at, finished_at, scheduled_for) and error summary
    (`error` = "TypeName: message", `error_type`), or 404 when the runtime does not know
    the id (never spawned here, or finished longer ago than `keep_finished` reaches).
    `GET /jobs?name=&state=&key=&lane=&limit=` lists the tasks matching every filter given.

    The durable tier (docs/durable.md), read from its store, i.e. across every process
    sharing it: `GET /jobs/durable` gives queue depths by state, ready and scheduled
    counts, live and expired leases, the oldest ready task's age and this process's
    counters; `GET /jobs/durable/tasks?state=&limit=` lists stored tasks newest first,
    `GET /jobs/durable/tasks/{id}` gives one with its result (if it is JSON; else
    `result_repr`), `GET /jobs/durable/dead` lists the dead-letter set. When this process
    has no durable tier in use, `GET /jobs/durable` answers `{"enabled": false}` and the
    others 404; no store is ever opened (nor ./offload.db created) by these routes.

    `dependencies` is required (a non-empty list of `Depends(...)`): each runs before every
    route and raises `HTTPException(401/403)` to refuse. `runtime` defaults to the app's.
    """
    checked = _checked_dependencies(dependencies)
    if not isinstance(prefix, str) or not prefix.startswith("/") or prefix.endswith("/"):
        raise ValueError(f"prefix must start with '/' and not end with '/', got {prefix!r}")
    if isinstance(max_limit, bool) or not isinstance(max_limit, int) or max_limit < 1:
        raise ValueError(f"max_limit must be an int >= 1, got {max_limit!r}")
    router = APIRouter(prefix=prefix, dependencies=checked, tags=["offload"])
    _add_routes(router, _runtime_dependency(runtime), max_limit)
    return router


def _checked_dependencies(dependencies: Sequence[Any] | None) -> list[Any]:
    if dependencies is None or isinstance(dependencies, str | bytes):
        raise TypeError(_DEPENDENCIES_REQUIRED)
    try:
        items = list(dependencies)
    except TypeError:
        raise TypeError(_DEPENDENCIES_REQUIRED) from None
    if not items:
        raise TypeError(_DEPENDENCIES_REQUIRED)
    for item in items:
        if not isinstance(item, fastapi_params.Depends):
            raise TypeError(
                f"status_router(dependencies=...) takes Depends(...) items, not {item!r};"
                " wrap the dependency: dependencies=[Depends(require_admin)]"
            )
    return items


def _runtime_dependency(runtime: Runtime | None) -> Callable[..., Awaitable[Runtime]]:
    if runtime is None:
        return get_runtime

    async def fixed_runtime() -> Runtime:
        return runtime

    return fixed_runtime


def _add_routes(
    router: APIRouter, runtime_dependency: Callable[..., Awaitable[Runtime]], max_limit: int
) -> None:
    Rt = Annotated[Runtime, Depends(runtime_dependency)]
    _add_durable_routes(router, Rt, max_limit)  # before "/{task_id}", which would take "durable"

    @router.get("/{task_id}", summary="One offload task's status")
    async def offload_task_status(rt: Rt, task_id: int) -> JSONResponse:
        info = rt.get(task_id)
        if info is None:
            detail = (
                f"no task with id {task_id}: never spawned on this runtime, or finished"
                " and no longer kept (see the Runtime option keep_finished)"
            )
            return JSONResponse(
                {"detail": detail, "id": task_id}, status_code=404, headers=_NO_STORE
            )
        return JSONResponse(info.as_dict(), headers=_NO_STORE)

    @router.get("", summary="offload tasks, filtered")
    async def offload_task_list(
        rt: Rt,
        name: str | None = None,
        state: State | None = None,
        key: str | None = None,
        lane: Lane | None = None,
        limit: Annotated[int, Query(ge=1, le=max_limit)] = min(100, max_limit),
    ) -> JSONResponse:
        try:
            infos = rt.tasks(name=name, state=state, key=key, lane=lane, limit=limit)
        except ValueError as exc:  # a filter the runtime refuses: say why, as FastAPI would
            return JSONResponse({"detail": str(exc)}, status_code=422, headers=_NO_STORE)
        items = [info.as_dict() for info in infos]
        return JSONResponse({"count": len(items), "items": items}, headers=_NO_STORE)


def _add_durable_routes(router: APIRouter, Rt: Any, max_limit: int) -> None:
    Limit = Annotated[int, Query(ge=1, le=max_limit)]
    default_limit = min(100, max_limit)

    @router.get("/durable", summary="The durable queue: depths, leases, this process's counters")
    async def offload_durable(rt: Rt) -> JSONResponse:
        durable = _durable.durable_of(rt)
        if durable is None:
            return JSONResponse(
                {"enabled": False, "detail": _durable.NOT_IN_USE}, headers=_NO_STORE
            )
        try:
            depths = await durable.adepths()
        except StoreError as exc:
            return _store_failed(exc)
        return JSONResponse(_durable.summary(durable, depths), headers=_NO_STORE)

    @router.get("/durable/tasks", summary="Durable tasks, newest first")
    async def offload_durable_tasks(
        rt: Rt, state: DurableState | None = None, limit: Limit = default_limit
    ) -> JSONResponse:
        return await _durable_list(rt, state, limit)

    @router.get("/durable/dead", summary="The dead-letter set, newest first")
    async def offload_durable_dead(rt: Rt, limit: Limit = default_limit) -> JSONResponse:
        return await _durable_list(rt, "dead", limit)

    @router.get("/durable/tasks/{task_id}", summary="One durable task, with its result")
    async def offload_durable_task(rt: Rt, task_id: str) -> JSONResponse:
        durable = _durable.durable_of(rt)
        if durable is None:
            return _not_in_use()
        try:
            record = await durable._aread(lambda store: store.get(task_id))
        except StoreError as exc:
            return _store_failed(exc)
        if record is None:
            detail = (
                f"no durable task with id {task_id!r} in {durable.shown_url}"
                " (never stored, or purged)"
            )
            return JSONResponse({"detail": detail, "id": task_id}, 404, headers=_NO_STORE)
        return JSONResponse(
            _durable.task_dict(durable, record, with_result=True), headers=_NO_STORE
        )


async def _durable_list(rt: Runtime, state: str | None, limit: int) -> JSONResponse:
    durable = _durable.durable_of(rt)
    if durable is None:
        return _not_in_use()
    try:
        records = await durable._aread(lambda store: store.tasks(state, limit))
    except StoreError as exc:
        return _store_failed(exc)
    items = [_durable.task_dict(durable, r, with_result=False) for r in records]
    return JSONResponse({"count": len(items), "items": items}, headers=_NO_STORE)


def _not_in_use() -> JSONResponse:
    return JSONResponse(
        {"enabled": False, "detail": _durable.NOT_IN_USE}, status_code=404, headers=_NO_STORE
    )


def _store_failed(exc: StoreError) -> JSONResponse:
    return JSONResponse(
        {"detail": f"the durable store failed: {exc}"}, status_code=503, headers=_NO_STORE
    )
