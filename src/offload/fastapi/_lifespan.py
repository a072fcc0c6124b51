"""`lifespan(...)` and `install(app)`: run an offload runtime for the life of an app.

Each app start gets a runtime that accepts work; with the default runtime, a start after
a shutdown (TestClient per test, uvicorn --reload) gets a fresh one, so nothing of one
start leaks into the next.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

from starlette.applications import Starlette

import offload

from .. import Runtime
from ._deps import STATE_ATTR

logger = logging.getLogger("offload")

AppT = TypeVar("AppT", bound=Starlette)
AppLifespan = Callable[[AppT], AbstractAsyncContextManager[Any]]

#: Kubernetes sends SIGTERM and, 30 s later (the default terminationGracePeriodSeconds),
#: SIGKILL. 20 s of draining leaves room before it for uvicorn to finish in-flight
#: requests and for the runtime's own cancel and thread-join grace (about 3 s) after it.
DEFAULT_DRAIN_TIMEOUT = 20.0


def lifespan(
    app_lifespan: AppLifespan[AppT] | None = None,
    *,
    runtime: Runtime | None = None,
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
) -> AppLifespan[AppT]:
    """A lifespan for `FastAPI(lifespan=...)` that runs an offload runtime around the app.

    At startup, the runtime (default: `offload.default_runtime()`) starts on the app's
    event loop, which becomes its home loop, and its `@offload.periodic` schedules
    start; then `app_lifespan`'s startup runs, so it may already spawn. At shutdown,
    `app_lifespan`'s shutdown runs first, then `runtime.shutdown(drain_timeout)`: the
    runtime's schedules stop, new spawns are refused,
    running tasks get `drain_timeout` seconds to finish, the rest are cancelled, and each
    unfinished task is logged by name on the `offload` logger. Whatever `app_lifespan`
    yields (lifespan state) is passed through.
    """
    _check_drain_timeout(drain_timeout)

    @asynccontextmanager
    async def offload_lifespan(app: AppT) -> AsyncIterator[Any]:
        rt = runtime if runtime is not None else _open_default_runtime()
        _start_on_running_loop(rt)
        setattr(app.state, STATE_ATTR, rt)
        _managed.add(rt)
        try:
            if app_lifespan is None:
                yield None
            else:
                async with app_lifespan(app) as state:
                    yield state
        finally:
            _managed.discard(rt)
            if getattr(app.state, STATE_ATTR, None) is rt:
                delattr(app.state, STATE_ATTR)
            await _shutdown(rt, drain_timeout)

    offload_lifespan._offload_lifespan = True  # type: ignore[attr-defined]
    return offload_lifespan


#: Runtimes an offload lifespan is running now (it drains them at shutdown).
_managed: weakref.WeakSet[Runtime] = weakref.WeakSet()


def manages(runtime: Runtime) -> bool:
    """Whether an app's offload lifespan runs `runtime` (and so drains it at shutdown)."""
    return runtime in _managed


def _open_default_runtime() -> Runtime:
    """The default runtime; a fresh one (same options) if an earlier app start shut it down."""
    runtime = offload.default_runtime()
    if runtime.closed:
        runtime = offload._renew_default_runtime()
        logger.debug("offload: a new default runtime for this app start")
    return runtime


def install(
    app: Starlette,
    *,
    runtime: Runtime | None = None,
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
) -> None:
    """One line for an existing app: `offload.fastapi.install(app)`.

    Its unchanged `fastapi.BackgroundTasks` parameters run on offload (as
    `offload.fastapi.BackgroundTasks`), and its lifespan gets offload's around it
    (unless it already is one): the runtime starts on the app's loop and is drained at
    shutdown. The app's own lifespan runs inside, unchanged.
    """
    from ._background import install as install_background_tasks

    _check_drain_timeout(drain_timeout)
    install_background_tasks(app)
    router = app.router
    if not getattr(router.lifespan_context, "_offload_lifespan", False):
        router.lifespan_context = lifespan(
            router.lifespan_context, runtime=runtime, drain_timeout=drain_timeout
        )


def _check_drain_timeout(timeout: object) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"drain_timeout must be a number of seconds, not {type(timeout).__name__}")
    if timeout < 0:
        raise ValueError(f"drain_timeout must be >= 0 seconds, got {timeout}")


def _start_on_running_loop(runtime: Runtime) -> None:
    loop = asyncio.get_running_loop()
    if runtime.started and runtime.home_loop is loop:
        return
    runtime.start(loop)
    logger.debug("offload: runtime started; home loop %r", loop)


async def _shutdown(runtime: Runtime, timeout: float) -> None:
    if runtime.closed:
        return
    live = sum(1 for task in runtime._live_tasks() if not task.done())
    logger.info("offload: shutting down, draining %d task(s) for up to %.1f s", live, timeout)
    unfinished = await runtime.shutdown(timeout)
    if unfinished:
        logger.warning(
            "offload: shutdown finished; %d task(s) did not finish (logged above by name)",
            len(unfinished),
        )
    else:
        logger.info("offload: shutdown finished; every task completed")
