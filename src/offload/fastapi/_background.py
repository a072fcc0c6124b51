"""A drop-in for FastAPI's `BackgroundTasks` whose tasks run concurrently on offload lanes."""

from __future__ import annotations

import functools
import logging
import types
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import BackgroundTasks as FastAPIBackgroundTasks
from fastapi import Depends
from starlette.background import BackgroundTask
from starlette.background import BackgroundTasks as StarletteBackgroundTasks
from starlette.requests import HTTPConnection

from .. import Runtime, Task, default_runtime
from ._deps import runtime_of

logger = logging.getLogger("offload")


class OffloadBackgroundTasks(StarletteBackgroundTasks):
    """Starlette's `BackgroundTasks`, but calling it spawns every task instead of awaiting each.

    `add_task(func, *args, **kwargs)` is unchanged. When Starlette calls the object after
    the response is sent, each task is spawned on its own: `async` functions on the loop
    lane, sync functions on the offload thread pool. The call returns at once; the
    runtime tracks the tasks (its shutdown drains them) and reports each failure on its
    own. The spawned `offload.Task` objects are kept in `.spawned`.
    """

    def __init__(
        self, tasks: Sequence[BackgroundTask] | None = None, *, runtime: Runtime | None = None
    ) -> None:
        super().__init__(tasks)
        self.runtime = runtime
        self.spawned: list[Task[Any]] = []

    async def __call__(self) -> None:
        runtime = self.runtime if self.runtime is not None else default_runtime()
        for task in self.tasks:
            spawned = _spawn(runtime, task)
            if spawned is not None:
                self.spawned.append(spawned)


def _spawn(runtime: Runtime, task: BackgroundTask) -> Task[Any] | None:
    """Spawn one background task; a task that can't start is logged, never raised."""
    func = task.func
    try:
        # The engine classifies the target itself (async functions, partials of them,
        # objects with an async __call__) and names the task after its __qualname__;
        # partials and callable objects get their function's or class's name instead.
        plain = isinstance(func, (types.FunctionType, types.MethodType))
        spawner = runtime if plain else runtime.options(name=_name_of(func))
        return spawner.spawn(func, *task.args, **task.kwargs)
    except Exception:
        logger.exception("offload: background task %r could not be started", _name_of(func))
        return None


def _name_of(func: Any) -> str:
    while isinstance(func, functools.partial):
        func = func.func
    name = getattr(func, "__qualname__", None)
    return name if isinstance(name, str) else type(func).__qualname__


async def _background_tasks(
    response_tasks: FastAPIBackgroundTasks, connection: HTTPConnection
) -> OffloadBackgroundTasks:
    """Give the handler an OffloadBackgroundTasks that FastAPI runs after the response.

    FastAPI always injects its own `BackgroundTasks` class for parameters annotated with a
    subclass, so ours rides on that object: it is added to it as one async callable.
    (Both parameters are ones FastAPI fills directly: a sub-dependency here would double
    the per-request cost of dependency solving.)
    """
    tasks = OffloadBackgroundTasks(runtime=runtime_of(connection.app))
    response_tasks.add_task(tasks)
    return tasks


#: Annotate a handler parameter with it, exactly like FastAPI's:
#: `async def signup(user: User, background_tasks: BackgroundTasks): ...`.
#: Calling it (`BackgroundTasks()`) builds an `OffloadBackgroundTasks` for
#: `Response(background=...)`; use `OffloadBackgroundTasks` for isinstance checks.
BackgroundTasks = Annotated[OffloadBackgroundTasks, Depends(_background_tasks)]
