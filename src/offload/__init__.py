"""offload: background work for asyncio and FastAPI services, with a C engine.

Fire and forget from anywhere with ``offload.spawn(send_email, to)``; await a result
with ``await offload.run(resize, image)`` (a drop-in for ``asyncio.to_thread``); run a
coroutine on a dedicated loop thread with ``offload.background.spawn(refresh())``; and
finish with ``await offload.shutdown(timeout=10)``. Periodic work:
``offload.every(60, refresh)``, ``offload.cron("0 3 * * *", report)``, ``@offload.periodic``.
"""

from __future__ import annotations

import atexit
import inspect
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar, overload

from . import _engine, durable
from ._controls import Backoff, Duplicate, Retry
from ._decorator import DurableTaskFunction, TaskFunction, task
from ._engine import Closed, Full, Lane, Task
from ._local import annotate_error, loop_local, thread_local
from ._lookup import TaskInfo
from ._periodic import Schedule, cron, every, periodic
from ._processes import ProcessDied
from ._runtime import Runtime, _reset_all_after_fork, _shutdown_all_at_exit, logger

__all__ = [
    "Backoff",
    "Closed",
    "Duplicate",
    "DurableTaskFunction",
    "Full",
    "Lane",
    "ProcessDied",
    "Retry",
    "Runtime",
    "Schedule",
    "Task",
    "TaskFunction",
    "TaskInfo",
    "background",
    "call",
    "configure",
    "cron",
    "default_runtime",
    "drain",
    "durable",
    "every",
    "get",
    "logger",
    "loop",
    "loop_local",
    "options",
    "periodic",
    "processes",
    "run",
    "shutdown",
    "spawn",
    "stats",
    "task",
    "thread_local",
    "threads",
]

__version__ = "0.1.0"

# The exceptions take a message like any exception, but the C ones (and ProcessDied,
# whose __init__ is BaseException's) have no signature inspect can find: give them one.
_MESSAGE_ARGS = inspect.Signature([inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL)])
for _exc_type in (Closed, Full, ProcessDied):
    _exc_type.__signature__ = _MESSAGE_ARGS  # type: ignore[union-attr]
del _exc_type

_P = ParamSpec("_P")
_R = TypeVar("_R")

#: The process-wide runtime behind the module-level functions. Its threads and loops
#: start on first use; `configure()` may change its options until then. After it was
#: shut down, an app's offload lifespan starting again replaces it with a fresh one
#: (`_renew_default_runtime`). `spawn`, `run`, `options` and the lanes below are C views
#: that read the current default runtime at each call (no Python frame in between), so
#: whoever imported them keeps working across a renewal.
_set_default_runtime = _engine._set_default_runtime
_default = Runtime()
_set_default_runtime(_default)
_renew_lock = threading.Lock()


def default_runtime() -> Runtime:
    """The process-wide runtime used by `offload.spawn`, `offload.threads`, ..."""
    return _default


def _renew_default_runtime() -> Runtime:
    """Replace a shut-down default runtime with a fresh one of the same options."""
    with _renew_lock:
        if _default.closed:
            _replace_default_runtime(Runtime(**_default.options_in_effect))
        return _default


def _replace_default_runtime(runtime: Runtime) -> Runtime:
    """Make `runtime` the default one (module functions and lanes included); return the
    previous one. For the lifespan's renewal and for tests that stand one in."""
    global _default
    previous, _default = _default, runtime
    _set_default_runtime(runtime)
    return previous


def configure(**options: Any) -> None:
    """Set the default runtime's options; only before its first use."""
    _default.configure(**options)


_auto: Lane = _engine._default_lane(None)
spawn = _auto.spawn
run = _auto.run
options = _auto.options
loop: Lane = _engine._default_lane("loop")
background: Lane = _engine._default_lane("background")
threads: Lane = _engine._default_lane("threads")
processes: Lane = _engine._default_lane("processes")


@overload
def call(
    target: Callable[_P, Coroutine[Any, Any, _R]], /, *args: _P.args, **kwargs: _P.kwargs
) -> _R: ...
@overload
def call(  # type: ignore[valid-type]
    target: Callable[_P, Coroutine[Any, Any, _R]],
    /,
    *args: _P.args,
    timeout: float | None,
    **kwargs: _P.kwargs,
) -> _R: ...
@overload
def call(target: Coroutine[Any, Any, _R], /, *, timeout: float | None = None) -> _R: ...
def call(  # type: ignore[misc]  # (see Runtime.call)
    target: Any, /, *args: Any, timeout: float | None = None, **kwargs: Any
) -> Any:
    """Run async code from sync code on the default runtime (see `Runtime.call`)."""
    return _default.call(target, *args, timeout=timeout, **kwargs)


def get(task_id: int) -> TaskInfo | None:
    """What the default runtime knows about task `task_id` (see `Runtime.get`)."""
    return _default.get(task_id)


def stats() -> dict[str, dict[str, Any]]:
    """Per-lane statistics of the default runtime."""
    return _default.stats()


async def drain(timeout: float | None = None) -> set[Task[Any]]:
    """Wait for everything spawned so far on the default runtime; return the unfinished."""
    return await _default.drain(timeout)


async def shutdown(timeout: float | None = None) -> set[Task[Any]]:
    """Shut the default runtime down (see `Runtime.shutdown`)."""
    return await _default.shutdown(timeout)


_engine._set_error_annotator(annotate_error)
atexit.register(_shutdown_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_all_after_fork)

del atexit, inspect, os, threading, _engine
