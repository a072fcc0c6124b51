"""A drop-in for FastAPI's `BackgroundTasks` whose tasks run concurrently on offload lanes."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import BackgroundTasks as FastAPIBackgroundTasks
from fastapi import Depends
from starlette.background import BackgroundTask
from starlette.background import BackgroundTasks as StarletteBackgroundTasks

from .. import Runtime, Task, default_runtime
from ._deps import get_runtime

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
    name = _name_of(task.func)
    lane = runtime.options(name=name)
    try:
        if not task.is_async:
            return lane.spawn(task.func, *task.args, **task.kwargs)
        # Calling the function only creates the coroutine (it runs on the lane); this also
        # covers partials and objects with an async __call__.
        coro = task.func(*task.args, **task.kwargs)
        try:
            return lane.spawn(coro)
        except BaseException:
            coro.close()  # refused: don't leave a "never awaited" coroutine behind
            raise
    except Exception:
        logger.exception("offload: background task %r could not be started", name)
        return None


def _name_of(func: Any) -> str:
    while isinstance(func, functools.partial):
        func = func.func
    name = getattr(func, "__qualname__", None)
    return name if isinstance(name, str) else type(func).__qualname__


async def _background_tasks(
    response_tasks: FastAPIBackgroundTasks, runtime: Annotated[Runtime, Depends(get_runtime)]
) -> OffloadBackgroundTasks:
    """Give the handler an OffloadBackgroundTasks that FastAPI runs after the response.

    FastAPI always injects its own `BackgroundTasks` class for parameters annotated with a
    subclass, so ours rides on that object: it is added to it as one async callable.
    """
    tasks = OffloadBackgroundTasks(runtime=runtime)
    response_tasks.add_task(tasks)
    return tasks


#: Annotate a handler parameter with it, exactly like FastAPI's:
#: `async def signup(user: User, background_tasks: BackgroundTasks): ...`.
#: Calling it (`BackgroundTasks()`) builds an `OffloadBackgroundTasks` for
#: `Response(background=...)`; use `OffloadBackgroundTasks` for isinstance checks.
BackgroundTasks = Annotated[OffloadBackgroundTasks, Depends(_background_tasks)]
