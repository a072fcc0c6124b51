"""offload: background work for asyncio and FastAPI services, with a C engine.

Fire and forget from anywhere with ``offload.spawn(send_email, to)``; await a result
with ``await offload.run(resize, image)`` (a drop-in for ``asyncio.to_thread``); run a
coroutine on a dedicated loop thread with ``offload.background.spawn(refresh())``; and
finish with ``await offload.shutdown(timeout=10)``.
"""

from __future__ import annotations

import atexit
import os
import threading
from typing import Any, cast

from . import _engine
from ._decorator import TaskFunction, task
from ._engine import Closed, Full, Lane, Task
from ._local import annotate_error, loop_local, thread_local
from ._processes import ProcessDied
from ._runtime import Runtime, _reset_all_after_fork, _shutdown_all_at_exit, logger

__all__ = [
    "Closed",
    "Full",
    "Lane",
    "ProcessDied",
    "Runtime",
    "Task",
    "TaskFunction",
    "background",
    "call",
    "configure",
    "default_runtime",
    "drain",
    "logger",
    "loop",
    "loop_local",
    "options",
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

#: The process-wide runtime behind the module-level functions. Its threads and loops
#: start on first use; `configure()` may change its options until then. After it was
#: shut down, an app's offload lifespan starting again replaces it with a fresh one
#: (`_renew_default_runtime`): so the functions and lanes below look it up on each call.
_default = Runtime()
_renew_lock = threading.Lock()


def default_runtime() -> Runtime:
    """The process-wide runtime used by `offload.spawn`, `offload.threads`, ..."""
    return _default


def _renew_default_runtime() -> Runtime:
    """Replace a shut-down default runtime with a fresh one of the same options."""
    global _default
    with _renew_lock:
        if _default.closed:
            _default = Runtime(**_default.options_in_effect)
        return _default


def configure(**options: Any) -> None:
    """Set the default runtime's options; only before its first use."""
    _default.configure(**options)


def spawn(target: Any, /, *args: Any, **kwargs: Any) -> Task[Any]:
    """Spawn on the default runtime (see `Runtime.spawn`)."""
    return _default.spawn(target, *args, **kwargs)


def run(target: Any, /, *args: Any, **kwargs: Any) -> Task[Any]:
    """Run on the default runtime and await the result (see `Runtime.run`)."""
    return _default.run(target, *args, **kwargs)


def call(target: Any, /, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
    """Run async code from sync code on the default runtime (see `Runtime.call`)."""
    return _default.call(target, *args, timeout=timeout, **kwargs)


def options(**kwargs: Any) -> Lane:
    """Per-call options on the default runtime: `name=`, `lane=` (see `Runtime.options`)."""
    return _default.options(**kwargs)


def stats() -> dict[str, dict[str, Any]]:
    """Per-lane statistics of the default runtime."""
    return _default.stats()


class _DefaultLane:
    """`offload.threads` and co.: the lane of whatever the default runtime is now.

    It passes for an `offload.Lane` (`isinstance` reads `__class__`), and forwards
    every attribute to the current default runtime's lane.
    """

    __slots__ = ("_lane",)

    def __init__(self, lane: str) -> None:
        self._lane = lane

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return Lane

    def __getattr__(self, attr: str) -> Any:
        return getattr(getattr(_default, self._lane), attr)

    def __repr__(self) -> str:
        return repr(getattr(_default, self._lane))


loop = cast(Lane, _DefaultLane("loop"))
background = cast(Lane, _DefaultLane("background"))
threads = cast(Lane, _DefaultLane("threads"))
processes = cast(Lane, _DefaultLane("processes"))


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

del atexit, os, threading, _engine
