"""offload.durable: the same spawn, persisted. A durable task is written to a store
(SQLite by default) before it counts as accepted, and runs at least once, in this
process or in any other sharing the store (docs/durable.md).

    offload.configure(store="sqlite:///offload.db")
    task = offload.durable.spawn(send_email, "a@example.com")
    await task.persisted()          # committed: survives a crash from here on
    print(await task.result())      # from any process

The functions here use the default runtime (`offload.default_runtime().durable`).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar, overload

from ._api import (
    DEFAULT_STORE,
    Durable,
    DurableInfo,
    DurableLane,
    DurableTask,
    DurableTaskFailed,
)
from ._store import Depths, StoreError, StoreFull

__all__ = [
    "DEFAULT_STORE",
    "Depths",
    "Durable",
    "DurableInfo",
    "DurableLane",
    "DurableTask",
    "DurableTaskFailed",
    "StoreError",
    "StoreFull",
    "aget",
    "cancel",
    "depths",
    "flush",
    "flush_sync",
    "get",
    "options",
    "spawn",
    "tasks",
]

P = ParamSpec("P")
T = TypeVar("T")


def _durable() -> Durable:
    from .. import default_runtime

    return default_runtime().durable


@overload
def spawn(
    fn: Callable[P, Coroutine[Any, Any, T]], /, *args: P.args, **kwargs: P.kwargs
) -> DurableTask[T]: ...
@overload
def spawn(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> DurableTask[T]: ...
def spawn(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> DurableTask[Any]:
    """Persist a call of `fn` (an importable function) and return its handle."""
    return _durable().spawn(fn, *args, **kwargs)


def options(**options: Any) -> DurableLane:
    """Durable spawns with task controls: timeout, retries, backoff, retry_on, delay,
    at, key, on_duplicate, and name, sync_commit."""
    return _durable().options(**options)


async def flush(timeout: float | None = None) -> None:
    """Return once every durable task spawned before the call is committed."""
    await _durable().flush(timeout)


def flush_sync(timeout: float | None = None) -> None:
    """flush() for a thread that runs no event loop."""
    _durable().flush_sync(timeout)


def get(task_id: str) -> DurableInfo | None:
    """A durable task's state, attempt, times, result or error, from any process."""
    return _durable().get(task_id)


async def aget(task_id: str) -> DurableInfo | None:
    return await _durable().aget(task_id)


def tasks(state: str | None = None, limit: int = 100) -> list[DurableInfo]:
    return _durable().tasks(state, limit)


def cancel(task_id: str) -> str:
    """ "cancelled" (it was queued or scheduled), "requested" (running: its worker
    cancels it), "finished" or "unknown"."""
    return _durable().cancel(task_id)


def depths() -> Depths:
    """Queue depths, leases and the oldest waiting task's age."""
    return _durable().depths()
