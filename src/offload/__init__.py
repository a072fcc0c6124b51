"""offload: background work for asyncio and FastAPI services, with a C engine.

Fire and forget from anywhere with ``offload.spawn(send_email, to)``; await a result
with ``await offload.run(resize, image)`` (a drop-in for ``asyncio.to_thread``); run a
coroutine on a dedicated loop thread with ``offload.background.spawn(refresh())``; and
finish with ``await offload.shutdown(timeout=10)``.
"""

from __future__ import annotations

import atexit
import inspect
import os
from typing import Any

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

# The exceptions take a message like any exception, but the C ones (and ProcessDied,
# whose __init__ is BaseException's) have no signature inspect can find: give them one.
_MESSAGE_ARGS = inspect.Signature([inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL)])
for _exc_type in (Closed, Full, ProcessDied):
    _exc_type.__signature__ = _MESSAGE_ARGS  # type: ignore[union-attr]
del _exc_type

#: The process-wide runtime behind the module-level functions. Its threads and loops
#: start on first use; `configure()` may change its options until then.
_default = Runtime()


def default_runtime() -> Runtime:
    """The process-wide runtime used by `offload.spawn`, `offload.threads`, ..."""
    return _default


def configure(**options: Any) -> None:
    """Set the default runtime's options; only before its first use."""
    _default.configure(**options)


spawn = _default.spawn
call = _default.call
run = _default.run
options = _default.options
stats = _default.stats
loop: Lane = _default.loop
background: Lane = _default.background
threads: Lane = _default.threads
processes: Lane = _default.processes


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

del atexit, os, _engine
