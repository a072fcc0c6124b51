"""`offload.fastapi.BackgroundTasks`: FastAPI's BackgroundTasks, run concurrently on offload.

Owns the class, the request-scoped run (spawn every task, then wait for them all, so the
request's `yield` dependencies, TestClient and the server's graceful shutdown wait too),
and how FastAPI is made to inject it: FastAPI creates one stock `BackgroundTasks` object
per request for every parameter annotated with any subclass of it, so a hidden
"adopter" dependency, put first in each dependant that has such a parameter, turns that
object into ours (`__class__` assignment: both are plain Python classes of one layout).
The adopter is wired in by wrapping `fastapi.dependencies.utils.add_non_field_param_to_
dependency`, the one place FastAPI recognises a BackgroundTasks parameter; `install(app)`
marks an app whose stock `fastapi.BackgroundTasks` parameters should run on offload too.
"""

# No `from __future__ import annotations`: FastAPI must resolve the adopter's annotations.
import asyncio
import functools
import logging
import types
from collections.abc import Callable, Sequence
from typing import Any

import fastapi
from fastapi import params as _fastapi_params
from fastapi.dependencies import utils as _fastapi_deps
from starlette.background import BackgroundTask
from starlette.background import BackgroundTasks as StarletteBackgroundTasks
from starlette.requests import HTTPConnection

from .. import Runtime, Task, default_runtime
from .._runtime import _describe
from ._deps import runtime_of

logger = logging.getLogger("offload")

#: Attribute of `app.state` set by `install(app)`.
INSTALLED_ATTR = "offload_background_tasks"


class BackgroundTasks(fastapi.BackgroundTasks):
    """FastAPI's `BackgroundTasks`, whose tasks run concurrently on offload's lanes.

    Annotate a parameter with it (`background_tasks: BackgroundTasks`), subclass it, or
    build one for `Response(background=BackgroundTasks(...))`. `add_task` is unchanged.
    After the response is sent, every task is spawned at once (async functions on the
    loop lane, sync ones on the C thread pool), then the request waits for them all:
    `yield` dependencies close after them and the server's graceful shutdown waits for
    them, as with FastAPI. Each failure is reported on its own and does not skip the
    others; a client disconnect does not cancel them. The spawned `offload.Task` objects
    are in `.spawned`.

    `sequential = True` keeps FastAPI's order (one task after the other; a failure still
    does not skip the next). `detach = True` lets the request end right after spawning;
    the tasks outlive it and the app's lifespan (`offload.fastapi.lifespan()` or
    `install(app)`) drains them at shutdown. Both can be set on an instance, a subclass
    or passed to the constructor.
    """

    #: Run the tasks one after another, in `add_task` order.
    sequential: bool = False
    #: End the request right after spawning; the lifespan drains the tasks at shutdown.
    detach: bool = False
    #: The runtime to spawn on; None: the app's when injected, else the default runtime.
    runtime: Runtime | None = None
    #: The `offload.Task` of each task spawned (set per instance).
    spawned: list[Task[Any]]

    def __init__(
        self,
        tasks: Sequence[BackgroundTask] | None = None,
        *,
        runtime: Runtime | None = None,
        sequential: bool | None = None,
        detach: bool | None = None,
    ) -> None:
        super().__init__(tasks)
        _prepare(self, runtime)
        if sequential is not None:
            self.sequential = _check_flag("sequential", sequential)
        if detach is not None:
            self.detach = _check_flag("detach", detach)

    async def __call__(self) -> None:
        runtime = self.runtime if self.runtime is not None else default_runtime()
        if not _on_asyncio():
            await self._call_without_asyncio(runtime)
            return
        if self.detach and _drained_at_shutdown(runtime):
            self._spawn_detached(runtime)
            return
        if self.detach:
            _warn_detach_undrained()
        if self.sequential:
            for task in self.tasks:
                spawned = self._keep(_spawn(runtime, task))
                if spawned is not None:
                    await _wait_for([spawned])
        else:
            await _wait_for(self._spawn_all(runtime))

    def _spawn_detached(self, runtime: Runtime) -> None:
        if self.sequential:
            self._keep(_spawn_sequence(runtime, list(self.tasks)))
        else:
            self._spawn_all(runtime)

    async def _call_without_asyncio(self, runtime: Runtime) -> None:
        """Under trio (e.g. hypercorn --worker-class trio): offload's loop lanes are asyncio,
        so async tasks run on the request's own loop (concurrently, failures logged);
        sync tasks still run on the offload thread pool. Always request-scoped."""
        import anyio

        async def run_one(task: BackgroundTask) -> None:
            if getattr(task, "is_async", False):
                try:
                    await task.func(*task.args, **task.kwargs)
                except Exception:
                    logger.exception("offload: background task %r failed", _name_of(task.func))
                return
            spawned = self._keep(_spawn(runtime, task))
            if spawned is not None:
                await anyio.to_thread.run_sync(spawned._wait, None, abandon_on_cancel=True)

        if self.sequential:
            for task in list(self.tasks):
                await run_one(task)
            return
        async with anyio.create_task_group() as group:
            for task in list(self.tasks):
                group.start_soon(run_one, task)

    def _spawn_all(self, runtime: Runtime) -> list[Task[Any]]:
        started = [self._keep(_spawn(runtime, task)) for task in self.tasks]
        return [task for task in started if task is not None]

    def _keep(self, task: Task[Any] | None) -> Task[Any] | None:
        if task is not None:
            self.spawned.append(task)
        return task


#: The name the docs used before it was a class; the same class.
OffloadBackgroundTasks = BackgroundTasks


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _prepare(tasks: BackgroundTasks, runtime: Runtime | None) -> None:
    """The per-instance state (also for objects FastAPI created and the adopter converted)."""
    if runtime is not None and not isinstance(runtime, Runtime):
        raise TypeError(f"runtime must be an offload.Runtime, not {type(runtime).__name__}")
    tasks.runtime = runtime
    tasks.spawned = []


def _check_flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {value!r}")
    return value


async def _wait_for(tasks: list[Task[Any]]) -> None:
    """Wait for every task to end without taking its failure (the runtime reports it).

    If this wait is cancelled (the server gave up on the request: a graceful-shutdown
    timeout, a disconnect), the tasks go on: they are the runtime's, and its drain or
    shutdown sees them. Those still running are named, since the server may exit next.
    """
    try:
        for task in tasks:
            if not task.done():
                await task._quiet_wait()
    except asyncio.CancelledError:
        left = [task for task in tasks if not task.done()]
        if left:
            logger.warning(
                "offload: the server stopped waiting for a request's background tasks;"
                " still running: %s",
                ", ".join(_describe(task) for task in left),
            )
        raise


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


def _spawn_sequence(runtime: Runtime, tasks: list[BackgroundTask]) -> Task[Any] | None:
    """A detached, sequential request: one thread-lane task runs the steps in order.

    The steps run inside it (sync ones on its worker thread, async ones on the request's
    loop) rather than being spawned one by one, so a shutdown that refuses new spawns
    still drains the whole sequence. A failing step is logged and the next one runs.
    """
    loop = asyncio.get_running_loop()

    def run_in_order() -> None:
        for task in tasks:
            try:
                if getattr(task, "is_async", False):
                    asyncio.run_coroutine_threadsafe(_run_async(task), loop).result()
                else:
                    task.func(*task.args, **task.kwargs)
            except Exception:
                logger.exception("offload: background task %r failed", _name_of(task.func))

    try:
        return runtime.options(name="BackgroundTasks (in order)", lane="threads").spawn(
            run_in_order
        )
    except Exception:
        logger.exception("offload: background tasks (in order) could not be started")
        return None


async def _run_async(task: BackgroundTask) -> None:
    await task.func(*task.args, **task.kwargs)


def _name_of(func: Any) -> str:
    while isinstance(func, functools.partial):
        func = func.func
    name = getattr(func, "__qualname__", None)
    return name if isinstance(name, str) else type(func).__qualname__


# -- detaching ---------------------------------------------------------------------


def _drained_at_shutdown(runtime: Runtime) -> bool:
    from ._lifespan import manages

    return manages(runtime)


_detach_warned = False


def _warn_detach_undrained() -> None:
    global _detach_warned
    if not _detach_warned:
        _detach_warned = True
        logger.warning(
            "offload: BackgroundTasks.detach needs the app to drain at shutdown"
            " (FastAPI(lifespan=offload.fastapi.lifespan()) or offload.fastapi.install(app));"
            " without it these tasks run request-scoped (the request waits for them)"
        )


# -- making FastAPI inject ours ------------------------------------------------------


def install(app: Any) -> None:
    """Make `app`'s stock `fastapi.BackgroundTasks` parameters run on offload, unchanged.

    Every route's `background_tasks: fastapi.BackgroundTasks` (in endpoints and
    dependencies, routes defined before or after this call) gets an
    `offload.fastapi.BackgroundTasks` instead. Called by `offload.fastapi.install`,
    which also gives the app offload's lifespan.
    """
    setattr(app.state, INSTALLED_ATTR, True)
    for route in getattr(app, "routes", []):
        dependant = getattr(route, "dependant", None)
        if dependant is not None:
            _add_adopters(dependant, set())


def _add_adopters(dependant: Any, seen: set[int]) -> None:
    """For routes made before `import offload.fastapi`: add the adopter where it is missing."""
    if id(dependant) in seen:
        return
    seen.add(id(dependant))
    for sub in dependant.dependencies:
        _add_adopters(sub, seen)
    if dependant.background_tasks_param_name and not _has_adopter(dependant):
        dependant.dependencies.insert(0, _adopter_dependant(fastapi.BackgroundTasks, dependant))


def _has_adopter(dependant: Any) -> bool:
    return any(getattr(sub.call, "_offload_adopter", False) for sub in dependant.dependencies)


def _installed(app: Any) -> bool:
    return getattr(getattr(app, "state", None), INSTALLED_ATTR, False) is True


def _adopt(tasks: StarletteBackgroundTasks, annotation: type, app: Any) -> None:
    """Turn the request's stock object into ours (or the annotated subclass of ours)."""
    if issubclass(annotation, BackgroundTasks):
        target: type = annotation
    elif _installed(app):
        target = BackgroundTasks
    else:
        return
    if isinstance(tasks, target) or not issubclass(target, type(tasks)):
        return  # already ours, or a sibling parameter made it another subclass first
    tasks.__class__ = target
    assert isinstance(tasks, BackgroundTasks)
    _prepare(tasks, runtime_of(app))


@functools.cache
def _adopter(annotation: type) -> Callable[..., Any]:
    async def adopt_background_tasks(
        background_tasks: StarletteBackgroundTasks, connection: HTTPConnection
    ) -> None:
        _adopt(background_tasks, annotation, connection.scope.get("app"))

    adopt_background_tasks._offload_adopter = True  # type: ignore[attr-defined]
    return adopt_background_tasks


def _adopter_dependant(annotation: type, dependant: Any) -> Any:
    return _fastapi_deps.get_parameterless_sub_dependant(
        depends=_fastapi_params.Depends(_adopter(annotation)), path=dependant.path
    )


def _check_convertible(annotation: type) -> None:
    """Fail at route definition, not per request, if FastAPI's object can't become it."""
    probe = fastapi.BackgroundTasks()
    try:
        probe.__class__ = annotation
    except TypeError as exc:
        raise TypeError(
            f"{annotation.__qualname__} can't be used as a BackgroundTasks parameter:"
            f" FastAPI's object can't become one ({exc}); don't give a BackgroundTasks"
            " subclass __slots__ or a different base"
        ) from None


def _wrap_fastapi() -> None:
    """Wrap the function where FastAPI recognises a BackgroundTasks parameter."""
    original = getattr(_fastapi_deps, "add_non_field_param_to_dependency", None)
    if original is None or not hasattr(_fastapi_deps, "get_parameterless_sub_dependant"):
        raise ImportError(
            "offload.fastapi.BackgroundTasks does not support this FastAPI version"
            f" ({fastapi.__version__}): fastapi.dependencies.utils has no"
            " add_non_field_param_to_dependency / get_parameterless_sub_dependant"
        )
    if getattr(original, "_offload_wrapped", False):
        return

    @functools.wraps(original)
    def add_non_field_param_to_dependency(
        *, param_name: str, type_annotation: Any, dependant: Any
    ) -> Any:
        result = original(
            param_name=param_name, type_annotation=type_annotation, dependant=dependant
        )
        if (
            result
            and dependant.background_tasks_param_name == param_name
            and not getattr(dependant.call, "_offload_adopter", False)
        ):
            if issubclass(type_annotation, BackgroundTasks):
                _check_convertible(type_annotation)
            adopter = _adopter_dependant(type_annotation, dependant)
            dependant.dependencies.insert(0, adopter)
        return result

    add_non_field_param_to_dependency._offload_wrapped = True  # type: ignore[attr-defined]
    _fastapi_deps.add_non_field_param_to_dependency = add_non_field_param_to_dependency


_wrap_fastapi()
