"""The durable worker of one runtime: runs claimed tasks on the runtime's lanes and
turns each attempt's end into an `Outcome` for the store thread.

Owns `active` (claimed tasks, by id, with their engine Task) and the retry decision.
`dispatch` runs on the store thread; `_done` runs wherever the engine completes the
task (a pool thread, a loop); both only touch `active` through single dict
operations, which the GIL makes atomic, so there is no lock.

A task runs on the lane its function would get: a coroutine function on the home
loop when the runtime has a running one (a standalone worker's), otherwise on the
background loop; a plain function on the threads lane. The engine enforces the
attempt's `timeout`; retries are decided here, against the attempt count the store
keeps (a crash counts too), never by the engine's own retry.
"""

from __future__ import annotations

import inspect
import logging
import random
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._controls import Retry
from ._codec import codec_for, resolve_function
from ._store import Claimed, Outcome

if TYPE_CHECKING:
    from .._runtime import Runtime
    from ._thread import StoreThread

logger = logging.getLogger("offload")

#: The longest error text kept with a dead-lettered task.
MAX_ERROR_TEXT = 8192


class Worker:
    """See the module docstring."""

    def __init__(self, runtime: Runtime, concurrency: int, signing_key: bytes | None) -> None:
        self.runtime = runtime
        self.concurrency = concurrency
        self.signing_key = signing_key
        self.thread: StoreThread | None = None
        #: id -> (claimed, engine task or None while being dispatched)
        self.active: dict[str, list[Any]] = {}
        self.claiming = True
        self._released: set[str] = set()
        self._cancel_requested: set[str] = set()
        self._lanes: dict[tuple[str, str, float | None], Any] = {}
        self.started = 0
        self.finished = 0

    def room(self) -> int:
        if not self.claiming:
            return 0
        return self.concurrency - len(self.active)

    # -- starting attempts (store thread) ------------------------------------------------
    def dispatch(self, claimed: list[Claimed]) -> None:
        for c in claimed:
            self.active[c.id] = [c, None]
            try:
                self._start(c)
            except BaseException as exc:  # noqa: BLE001 (it becomes the task's outcome)
                self.active.pop(c.id, None)
                self._put(self._failure(c, exc, undecodable=True))

    def _start(self, c: Claimed) -> None:
        fn = resolve_function(c.fn)
        args, kwargs = codec_for(c.codec, self.signing_key).decode_call(fn, c.payload)
        lane = self._lane(c.name, _lane_for(fn, self.runtime), c.timeout)
        try:
            task = lane._spawn_observed(fn, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 (a full or closed lane: give it back)
            logger.warning(
                "offload: durable task %s (id %s) could not start here (%s); released"
                " for another attempt",
                c.name,
                c.id,
                _text(exc),
            )
            self.active.pop(c.id, None)
            self._put(Outcome(c.id, c.attempt, "released", eta=time.time() + 0.1))
            return
        self.started += 1
        entry = self.active.get(c.id)
        if entry is not None:
            entry[1] = task
        task.add_done_callback(lambda t, c=c: self._done(c, t))

    def _lane(self, name: str, lane: str, timeout: float | None) -> Any:
        key = (name, lane, timeout)
        view = self._lanes.get(key)
        if view is None:
            if len(self._lanes) > 1000:
                self._lanes.clear()
            view = self.runtime.options(name=name, lane=lane, timeout=timeout)  # type: ignore[arg-type]
            self._lanes[key] = view
        return view

    # -- ending attempts (any thread) ----------------------------------------------------
    def _done(self, c: Claimed, task: Any) -> None:
        if self.active.pop(c.id, None) is None or c.id in self._released:
            return
        self.finished += 1
        if task.cancelled():
            if c.id in self._cancel_requested:
                self._cancel_requested.discard(c.id)
                outcome = Outcome(
                    c.id,
                    c.attempt,
                    "cancelled",
                    error_type="Cancelled",
                    error="cancelled on request",
                )
            else:
                outcome = Outcome(c.id, c.attempt, "released", eta=time.time())
        else:
            exc = task.exception()
            outcome = self._success(c, task) if exc is None else self._failure(c, exc)
        self._put(outcome)

    def _success(self, c: Claimed, task: Any) -> Outcome:
        value = task.result()
        if value is None:
            return Outcome(c.id, c.attempt, "succeeded")
        try:
            data = codec_for(c.codec, self.signing_key).encode_result(value)
        except Exception as exc:  # noqa: BLE001 (the task succeeded; its value can't be kept)
            logger.warning(
                "offload: durable task %s (id %s) succeeded but its result was not stored: %s",
                c.name,
                c.id,
                _text(exc),
            )
            return Outcome(
                c.id, c.attempt, "succeeded", error_type="ResultNotStored", error=_text(exc)
            )
        return Outcome(c.id, c.attempt, "succeeded", result=data)

    def _failure(self, c: Claimed, exc: BaseException, *, undecodable: bool = False) -> Outcome:
        kind = type(exc).__qualname__
        text = _error_text(exc)
        if not undecodable and c.attempt < c.max_attempts and _worth_retry(c, exc):
            delay = _retry_delay(c, exc)
            logger.warning(
                "offload: durable task %s (id %s) attempt %d of %d failed (%s: %s);"
                " retrying in %.3g s",
                c.name,
                c.id,
                c.attempt,
                c.max_attempts,
                kind,
                _text(exc),
                delay,
            )
            return Outcome(
                c.id, c.attempt, "retry", error_type=kind, error=text, eta=time.time() + delay
            )
        why = (
            "could not be started"
            if undecodable
            else f"failed attempt {c.attempt} of {c.max_attempts}"
        )
        logger.error(
            "offload: durable task %s (id %s) %s and went to the dead-letter set",
            c.name,
            c.id,
            why,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        return Outcome(c.id, c.attempt, "dead", error_type=kind, error=text)

    def _put(self, outcome: Outcome) -> None:
        thread = self.thread
        if thread is not None:
            was_full = len(self.active) + 1 >= self.concurrency
            thread.inbox.put(outcome)
            if was_full:
                thread.wake()

    # -- requests from the store and from shutdown ------------------------------------------
    def cancel_running(self, ids: list[str]) -> None:
        for task_id in ids:
            entry = self.active.get(task_id)
            if entry is not None and entry[1] is not None and task_id not in self._cancel_requested:
                self._cancel_requested.add(task_id)
                entry[1].cancel()

    def release_all(self) -> list[Any]:
        """Stop claiming; mark every running attempt released (its end is ignored).
        Returns their engine tasks (the caller cancels them once the store let go)."""
        self.claiming = False
        tasks = []
        for task_id, (_, task) in list(self.active.items()):
            self._released.add(task_id)
            if task is not None:
                tasks.append(task)
        return tasks


def _lane_for(fn: Callable[..., Any], runtime: Runtime) -> str:
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004
    ):
        loop = runtime.home_loop
        return "loop" if loop is not None and loop.is_running() else "background"
    return "threads"


def _worth_retry(c: Claimed, exc: BaseException) -> bool:
    if isinstance(exc, Retry):
        return True
    if not isinstance(exc, Exception):
        return False
    if not c.retry_on:
        return True
    names = {f"{k.__module__}.{k.__qualname__}" for k in type(exc).__mro__}
    return any(name in names for name in c.retry_on)


def _retry_delay(c: Claimed, exc: BaseException) -> float:
    if isinstance(exc, Retry) and exc.delay is not None:
        return float(exc.delay)
    if c.backoff is None:
        return 0.0
    initial, factor, most, jitter = c.backoff
    wait = min(most, initial * factor ** (c.attempt - 1))
    return random.uniform(wait / 2, wait) if jitter else wait


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 (a user's __str__ that raises)
        return f"<{type(exc).__qualname__} (its str() failed)>"


def _error_text(exc: BaseException) -> str:
    try:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except Exception:  # noqa: BLE001 (a user's __str__/__repr__ that raises)
        text = f"{type(exc).__qualname__}: {_text(exc)}"
    return text[-MAX_ERROR_TEXT:]
