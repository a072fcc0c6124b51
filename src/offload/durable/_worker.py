"""The durable worker of one runtime: runs claimed tasks on the runtime's lanes and
turns each attempt's end into an `Outcome` for the store thread.

Owns `active` (claimed tasks, by id, with their engine Task) and the retry decision.
`dispatch` runs on the store thread; `_done` runs wherever the engine completes the
task (a pool thread, a loop). One id has one entry: if this worker claims a task again
while its older attempt still runs (its lease ran out and the task came back), the
newer attempt's entry replaces the older one, and the older attempt's end must not
remove it. Lock rule: `_active_lock` is held only around putting an entry in and
taking one out (`dispatch`, `_leave`), never around a call out; reads are single dict
operations, which the GIL makes atomic.

A task runs on the lane its function would get: a coroutine function on the home
loop when the runtime has a running one (a standalone worker's), otherwise on the
background loop; a plain function on the threads lane. The engine enforces the
attempt's `timeout`; retries are decided here, against the attempt count the store
keeps (a crash counts too), never by the engine's own retry.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._controls import Retry
from .._runtime import _is_async_callable
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
        self._active_lock = threading.Lock()
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
            with self._active_lock:
                self.active[c.id] = [c, None]
            try:
                self._start(c)
            except BaseException as exc:  # noqa: BLE001 (it becomes the task's outcome)
                self._put(self._failure(c, exc, undecodable=True))
                self._leave(c)

    def _leave(self, c: Claimed) -> None:
        """`c`'s attempt leaves `active`, unless a newer attempt of its task took its
        entry (see the module docstring)."""
        with self._active_lock:
            entry = self.active.get(c.id)
            if entry is not None and entry[0] is c:
                del self.active[c.id]

    def _start(self, c: Claimed) -> None:
        """Resolve the function here (imports are cached: once per function); decode the
        arguments in the attempt itself, on its lane, so that a user's validators,
        `__post_init__` or unpickling never run on the store thread."""
        fn = resolve_function(c.fn)
        codec = codec_for(c.codec, self.signing_key)
        is_async = _is_async_callable(fn)
        lane = self._lane(c.name, _lane_for(is_async, self.runtime), c.timeout)
        call = _call_async if is_async else _call_sync
        try:
            task = lane._spawn_observed(call, fn, codec, c.payload)
        except Exception as exc:  # noqa: BLE001 (a full or closed lane: give it back)
            logger.warning(
                "offload: durable task %s (id %s) could not start here (%s); released"
                " for another attempt",
                c.name,
                c.id,
                _text(exc),
            )
            self._put(Outcome(c.id, c.attempt, "released", eta=time.time() + 0.1))
            self._leave(c)
            return
        self.started += 1
        entry = self.active.get(c.id)
        if entry is not None and entry[0] is c:
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
        """The attempt ended: put its outcome in the store thread's inbox, always, and
        only then let it leave `active` (shutdown waits for `active` to empty, so an
        outcome on its way is never left behind)."""
        try:
            if c.id not in self._released:
                try:
                    outcome = self._outcome_of(c, task)
                except BaseException as exc:
                    logger.error(
                        "offload: the outcome of durable task %s (id %s) could not be decided",
                        c.name,
                        c.id,
                        exc_info=(type(exc), exc, exc.__traceback__),
                    )
                    outcome = Outcome(
                        c.id, c.attempt, "dead", error_type="InternalError", error=_text(exc)
                    )
                self.finished += 1
                self._put(outcome)
        finally:
            if self.active.get(c.id, (c,))[0] is c:  # (not a newer attempt's marks)
                self._released.discard(c.id)
                self._cancel_requested.discard(c.id)
            self._leave(c)

    def _outcome_of(self, c: Claimed, task: Any) -> Outcome:
        if task.cancelled():
            if c.id in self._cancel_requested:
                return Outcome(
                    c.id,
                    c.attempt,
                    "cancelled",
                    error_type="Cancelled",
                    error="cancelled on request",
                )
            # cancelled by something else (its own code, its loop closing): the attempt
            # counts, like a crash, so a task that cancels itself can't run forever
            return self._failure(c, _CancelledAttempt(), retry_any=True)
        exc = task.exception()
        if exc is None:
            return self._success(c, task)
        return self._failure(c, exc, undecodable=isinstance(exc, _Undecodable))

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

    def _failure(
        self, c: Claimed, exc: BaseException, *, undecodable: bool = False, retry_any: bool = False
    ) -> Outcome:
        kind = type(exc).__qualname__
        text = _error_text(exc)
        worth = retry_any or _worth_retry(c, exc)
        if not undecodable and c.attempt < c.max_attempts and worth:
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
        if thread is None:
            return
        was_full = len(self.active) >= self.concurrency
        thread.inbox.put(outcome)
        if thread.ended:  # (close waits for ended attempts, within its timeout)
            logger.error(
                "offload: the outcome of durable task %s (attempt %d: %s) came after its"
                " store closed and was not written; the task runs again once its lease"
                " expires",
                outcome.id,
                outcome.attempt,
                outcome.kind,
            )
        elif was_full:
            thread.wake()

    # -- requests from the store and from shutdown ------------------------------------------
    def renewable(self) -> list[str]:
        """The ids whose lease this worker still needs: its attempts not released."""
        return [task_id for task_id in list(self.active) if task_id not in self._released]

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

    def wait_outcomes(self, timeout: float) -> None:
        """Wait (bounded) until every ended attempt's outcome is in the inbox."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending = [
                e for task_id, e in list(self.active.items()) if task_id not in self._released
            ]
            if not any(e[1] is not None and e[1].done() for e in pending):
                return
            time.sleep(0.001)


class _Undecodable(Exception):
    """The attempt's arguments could not be decoded: dead-lettered, never retried."""


class _CancelledAttempt(Exception):
    """An attempt cancelled by something else than offload's durable worker."""

    def __init__(self) -> None:
        super().__init__(
            "the attempt was cancelled (by its own code, or its event loop closing), not"
            " by a cancel() or a shutdown"
        )


def _call_sync(fn: Callable[..., Any], codec: Any, payload: bytes) -> Any:
    try:
        args, kwargs = codec.decode_call(fn, payload)
    except Exception as exc:
        raise _Undecodable(f"cannot decode the arguments: {_text(exc)}") from exc
    return fn(*args, **kwargs)


async def _call_async(fn: Callable[..., Any], codec: Any, payload: bytes) -> Any:
    try:
        args, kwargs = codec.decode_call(fn, payload)
    except Exception as exc:
        raise _Undecodable(f"cannot decode the arguments: {_text(exc)}") from exc
    return await fn(*args, **kwargs)


def _lane_for(is_async: bool, runtime: Runtime) -> str:
    if is_async:
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
    try:
        wait = min(most, initial * factor ** (c.attempt - 1))
    except OverflowError:  # factor ** attempts beyond a float: long past `most`
        wait = most
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
