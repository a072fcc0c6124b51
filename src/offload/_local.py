"""Per-loop and per-thread instances of loop-bound singletons (API and DB clients).

An `httpx.AsyncClient` or a DB pool belongs to the event loop it was created on; used
from another loop it fails in obscure ways, or worse, sometimes works. `loop_local`
gives each loop its own instance, created lazily in that loop and closed when the
runtime shuts that loop's lane down. `thread_local` does the same for pool threads.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ._options import safe_repr

T = TypeVar("T")

#: Every live loop_local, so a runtime can close the instances of the loops it stops.
_all_loop_locals: weakref.WeakSet[loop_local[Any]] = weakref.WeakSet()

#: Words of asyncio's (and anyio's) errors for an object used from the wrong loop.
_WRONG_LOOP_SIGNS = (
    "attached to a different loop",
    "bound to a different event loop",
    "different event loop",
    "Event loop is closed",
    "is bound to a different",
)
HINT = (
    "offload: this object is bound to another event loop (a client, lock or pool created"
    " on one loop and used on another). Create one per loop with offload.loop_local(factory)"
)


def annotate_error(exc: BaseException) -> None:
    """Point loop-affinity failures at loop_local (called by the engine on each failure)."""
    if isinstance(exc, RuntimeError) and any(s in str(exc) for s in _WRONG_LOOP_SIGNS):
        notes = getattr(exc, "__notes__", ())
        if HINT in notes or HINT in str(exc):
            return
        if sys.version_info >= (3, 11):
            exc.add_note(HINT)
        else:  # no notes before 3.11: the hint joins the message
            exc.args = (f"{exc.args[0] if exc.args else ''}\n{HINT}", *exc.args[1:])


def _check_factory(kind: str, factory: object, close: object) -> None:
    if not callable(factory):
        raise TypeError(f"{kind} needs a factory callable, not {type(factory).__name__}")
    if inspect.iscoroutinefunction(factory) or inspect.iscoroutinefunction(type(factory).__call__):
        raise TypeError(
            f"{kind} needs a sync factory that returns the object, and {safe_repr(factory)} is an"
            " async function (its coroutine would never be awaited); create async resources"
            " lazily inside the object, or wrap them"
        )
    if close is not None and not callable(close):
        raise TypeError(f"close must be callable or None, not {type(close).__name__}")


class loop_local(Generic[T]):
    """One instance of `factory()` per event loop, created on first use in that loop.

    >>> http = offload.loop_local(httpx.AsyncClient, close=lambda c: c.aclose())
    >>> await http.get(url)        # attribute access goes to this loop's instance
    >>> http.instance()            # or take it explicitly

    `close(instance)` (sync or async) runs when the runtime shuts down the loop's lane:
    background loops at shutdown, the home loop during `await runtime.shutdown()`.
    """

    def __init__(self, factory: Callable[[], T], close: Callable[[T], Any] | None = None) -> None:
        _check_factory("loop_local", factory, close)
        self._factory = factory
        self._close = close
        self._lock = threading.Lock()
        self._instances: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )
        _all_loop_locals.add(self)

    def instance(self) -> T:
        """This loop's instance (created now if it is the first use in this loop)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "loop_local.instance() must be called from a coroutine running on an event"
                " loop; from sync code use offload.call(...) to run the async code"
            ) from None
        with self._lock:
            if loop in self._instances:
                return self._instances[loop]
        value = self._factory()
        if inspect.isawaitable(value):
            raise TypeError(
                "loop_local's factory must return the object, not an awaitable; create async"
                " resources lazily inside the object, or wrap them"
            )
        with self._lock:
            return self._instances.setdefault(loop, value)

    def __getattr__(self, name: str) -> Any:
        """This loop's attribute; an async method comes back as an async function that
        finds the instance on the loop where it runs, so `background.spawn(http.get, url)`
        and `offload.call(http.get, url)` use the right loop's client."""
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._method_on_its_loop(name)
        value = getattr(self.instance(), name)
        return self._method_on_its_loop(name) if inspect.iscoroutinefunction(value) else value

    def _method_on_its_loop(self, name: str) -> Callable[..., Any]:
        async def on_its_loop(*args: Any, **kwargs: Any) -> Any:
            result = getattr(self.instance(), name)(*args, **kwargs)
            return await result if inspect.isawaitable(result) else result

        on_its_loop.__qualname__ = on_its_loop.__name__ = name
        return on_its_loop

    def loops(self) -> list[asyncio.AbstractEventLoop]:
        """The loops that have an instance."""
        with self._lock:
            return list(self._instances)

    async def aclose(self) -> None:
        """Close this loop's instance now (it is re-created on next use)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            value = self._instances.pop(loop, _MISSING)
        if value is not _MISSING:
            await _close_one(self._close, value)

    def __repr__(self) -> str:
        return f"<offload.loop_local of {self._factory!r}, {len(self._instances)} loop(s)>"


_MISSING: Any = object()


async def _close_one(close: Callable[[Any], Any] | None, value: Any) -> None:
    if close is None:
        return
    result = close(value)
    if inspect.isawaitable(result):
        await result


async def close_loop_locals(loop: asyncio.AbstractEventLoop) -> list[BaseException]:
    """Close every loop_local instance of `loop` (run on that loop). Returns the errors."""
    errors: list[BaseException] = []
    for local in list(_all_loop_locals):
        with local._lock:
            value = local._instances.pop(loop, _MISSING)
        if value is _MISSING:
            continue
        try:
            await _close_one(local._close, value)
        except Exception as exc:  # noqa: BLE001 (one client's close must not stop the others)
            errors.append(exc)
    return errors


def loops_with_locals() -> set[asyncio.AbstractEventLoop]:
    return {loop for local in list(_all_loop_locals) for loop in local.loops()}


class _Closer:
    """Lives in a thread's threading.local: when the thread ends, the local's storage
    is freed and this closes the instance."""

    def __init__(self, value: Any, close: Callable[[Any], Any] | None) -> None:
        self.value = value
        self.close = close

    def __del__(self) -> None:
        if self.close is not None:
            try:
                self.close(self.value)
            except Exception:
                import logging

                logging.getLogger("offload").exception("offload: thread_local close failed")


class thread_local(Generic[T]):
    """One instance of `factory()` per thread (e.g. a sync DB connection per pool
    thread), created on first use; `close(instance)` runs when the thread exits."""

    def __init__(self, factory: Callable[[], T], close: Callable[[T], Any] | None = None) -> None:
        _check_factory("thread_local", factory, close)
        self._factory = factory
        self._close = close
        self._local = threading.local()

    def instance(self) -> T:
        """This thread's instance (created now on first use in this thread)."""
        holder = getattr(self._local, "holder", None)
        if holder is None:
            holder = _Closer(self._factory(), self._close)
            self._local.holder = holder
        value: T = holder.value
        return value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.instance(), name)

    def __repr__(self) -> str:
        return f"<offload.thread_local of {self._factory!r}>"
