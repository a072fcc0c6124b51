"""`metrics_router()`: Prometheus exposition of the runtime's statistics (`metrics` extra)."""

# No `from __future__ import annotations`: FastAPI must resolve the route closure's annotations.
import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from .. import Runtime
from ._deps import get_runtime
from ._durable import durable_of

log = logging.getLogger("offload")

_MISSING = (
    "offload.fastapi.metrics_router() needs prometheus_client;"
    " install it with: pip install 'offload[metrics]'"
)


def metrics_router(runtime: Runtime | None = None, *, path: str = "/metrics") -> APIRouter:
    """An APIRouter serving Prometheus text at `path`: `app.include_router(metrics_router())`.

    Exposes the runtime's per-lane counters (`offload_tasks_submitted_total`,
    `offload_tasks_finished_total{outcome=...}`, `offload_tasks_retried_total`, ...), gauges
    (`offload_tasks_pending`, `offload_tasks_running`, `offload_tasks_scheduled`, ...),
    latency summaries (`offload_task_queue_wait_seconds`, `offload_task_run_time_seconds`)
    and per-name attempts (`offload_task_attempts_total{name=...}`, `offload_task_retries_total`).
    When the durable tier is in use: `offload_durable_tasks{state=...}`,
    `offload_durable_ready`, `offload_durable_scheduled`,
    `offload_durable_oldest_ready_seconds`, `offload_durable_leases{kind="live|expired"}`
    (the whole store) and `offload_durable_{committed,started,finished}_total` (this process).
    `runtime` defaults to the app's.
    Protect it like any metrics endpoint (e.g. `dependencies=` on include_router).
    """
    try:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        from ._collector import DEPTHS_TIMEOUT, OffloadCollector
    except ImportError as exc:
        raise ImportError(_MISSING) from exc

    router = APIRouter(include_in_schema=False)

    async def app_runtime(rt: Annotated[Runtime, Depends(get_runtime)]) -> Runtime:
        return runtime if runtime is not None else rt

    @router.get(path)
    async def offload_metrics(rt: Annotated[Runtime, Depends(app_runtime)]) -> Response:
        collector = OffloadCollector(rt)
        durable = durable_of(rt)
        if durable is not None:  # the store answers on its thread; the loop never waits
            collector._prefetched = True
            try:
                collector._depths = await asyncio.wait_for(durable.adepths(), DEPTHS_TIMEOUT)
            except Exception:
                log.exception("offload metrics: reading the durable queue's depths failed")
        body = generate_latest(collector)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router
