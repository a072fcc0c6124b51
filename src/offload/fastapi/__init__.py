"""FastAPI integration: lifespan, drop-in BackgroundTasks, a dependency, a dashboard, task
status endpoints, metrics.

    import offload.fastapi
    from offload.fastapi import BackgroundTasks, Offload, dashboard_router, metrics_router
    from offload.fastapi import status_router

    app = FastAPI(lifespan=offload.fastapi.lifespan(my_lifespan, drain_timeout=20))
    offload.fastapi.install(app)  # or: existing `fastapi.BackgroundTasks` params run on offload
    app.include_router(dashboard_router(authorize=require_admin), prefix="/offload")
    app.include_router(status_router(dependencies=[Depends(require_user)], prefix="/jobs"))
    app.include_router(metrics_router())          # needs the `metrics` extra

See docs/fastapi.md for the details and for where BackgroundTasks differs from FastAPI's.
"""

from __future__ import annotations

try:
    import fastapi as _fastapi  # noqa: F401
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "offload.fastapi needs FastAPI; install it with: pip install 'offload[fastapi]'"
    ) from _exc

from ._background import BackgroundTasks, OffloadBackgroundTasks
from ._dashboard import dashboard_router
from ._deps import Offload, get_runtime, runtime_of
from ._failures import Failure, FailureLog, failure_log
from ._lifespan import DEFAULT_DRAIN_TIMEOUT, install, lifespan
from ._metrics import metrics_router
from ._status import status_router

__all__ = [
    "DEFAULT_DRAIN_TIMEOUT",
    "BackgroundTasks",
    "Failure",
    "FailureLog",
    "Offload",
    "OffloadBackgroundTasks",
    "OffloadCollector",
    "dashboard_router",
    "failure_log",
    "get_runtime",
    "install",
    "lifespan",
    "metrics_router",
    "runtime_of",
    "status_router",
]


def __getattr__(name: str) -> object:
    # OffloadCollector needs prometheus_client (the `metrics` extra): import it on demand.
    if name == "OffloadCollector":
        try:
            from ._collector import OffloadCollector
        except ImportError as exc:
            raise ImportError(
                "offload.fastapi.OffloadCollector needs prometheus_client;"
                " install it with: pip install 'offload[metrics]'"
            ) from exc
        return OffloadCollector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
