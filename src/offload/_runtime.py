"""The public Runtime: a thin Python face over the C engine (offload._engine.Engine).

The engine owns tasks, lanes, queues, threads, loops, limits and statistics. This
file only validates options, reports failures on the `offload` logger, and
sequences drain/shutdown from the C primitives.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from . import _engine, _periodic
from ._local import close_loop_locals
from ._lookup import (
    ENGINE_LANES,
    ENGINE_STATES,
    TaskInfo,
    check_filters,
    check_task_id,
    info_from_engine,
)
from ._options import DURABLE_KEYS, safe_repr, validate
from ._processes import MAX_BATCH, ProcessPool, pool_size, prepare

if TYPE_CHECKING:
    from .durable._api import Durable

logger = logging.getLogger("offload")

Task = _engine.Task
P = ParamSpec("P")
R = TypeVar("R")

#: Shares of a shutdown timeout: draining, then letting cancelled coroutines run
#: their `finally:` blocks, then waiting for pool and loop threads to exit.
DRAIN_SHARE, CANCEL_SHARE, JOIN_SHARE = 0.8, 0.1, 0.1
#: Without a timeout, the cancel and join phases still get bounded waits.
CANCEL_GRACE, JOIN_GRACE = 1.0, 2.0


def _phases(timeout: float | None) -> tuple[float | None, float, float]:
    """Split a shutdown timeout so the whole shutdown fits inside it."""
    if timeout is None:
        return None, CANCEL_GRACE, JOIN_GRACE
    return timeout * DRAIN_SHARE, timeout * CANCEL_SHARE, timeout * JOIN_SHARE


_COMPLETED = frozenset({"succeeded", "failed"})

_live_runtimes: weakref.WeakSet[Runtime] = weakref.WeakSet()

#: Attributes Runtime.__init__ sets: missing means it never ran.
_SET_BY_INIT = frozenset(
    {"_options", "_pool", "_pool_stuck", "_abandoned", "_periodic", "_durable"}
)


def _safe_repr(obj: object) -> str:
    """repr() for reports: a user's __repr__ that raises must not hide the report."""
    try:
        return repr(obj)
    except Exception:  # noqa: BLE001 (any failure of user code: fall back to the type)
        return f"<{type(obj).__name__} object at {id(obj):#x}>"


def _describe(task: Task[Any]) -> str:
    return f"{_safe_repr(task.name)} (id={task.id}, lane={task.lane}, state={task.state})"


def _thread_wait(timeout: float) -> float:
    """A timeout `threading`/`concurrent.futures` waits accept: at least 0.1 s, and
    inf (or anything past threading.TIMEOUT_MAX, which raises OverflowError) clamped."""
    if not timeout >= 0.1:  # also nan
        return 0.1
    return min(timeout, threading.TIMEOUT_MAX)


class Runtime(_engine.Engine):
    """Runs background work on lanes: `loop`, `background`, `threads`, `processes`.

    Usable as `with Runtime() as rt:` from sync code and `async with Runtime() as rt:`
    from async code (then the running loop becomes the home loop).
    """

    def __init__(self, **options: Any) -> None:
        self._options = validate(options)
        #: The options as given: configure() merges into these, not into the resolved
        #: ones (whose per-lane dict would override a new top-level max_pending).
        self._given = dict(options)
        #: Its schedules (offload.every/cron) and @offload.periodic registrations.
        self._periodic = _periodic._Registry()
        #: Its durable tier (offload.durable), made on first use of `durable`.
        self._durable: Durable | None = None
        super().__init__(_engine_options(self._options))
        self._install_process_pool()
        self._apply_keep_finished()
        #: Tasks cancelled because their event loop was closed under them (e.g. the
        #: app's loop is gone at interpreter exit); shutdown names them as unfinished.
        self._abandoned: set[Task[Any]] = set()
        _live_runtimes.add(self)

    if not TYPE_CHECKING:  # (invisible to mypy, which keeps checking attribute names)

        def __getattr__(self, name: str) -> Any:
            # Reached only when an attribute is missing: __init__ never ran (a subclass
            # that forgot super().__init__()); the engine's entry points say the same.
            if name in _SET_BY_INIT:
                raise RuntimeError(
                    f"this {type(self).__name__} was never initialised: its __init__ must"
                    " call super().__init__(...) before the runtime is used"
                )
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r}", name=name, obj=self
            )

    # -- options ---------------------------------------------------------------
    @property
    def options_in_effect(self) -> dict[str, Any]:
        return dict(self._options)

    def configure(self, **options: Any) -> None:
        """Change options; allowed only before the runtime is first used."""
        if self.started:
            raise RuntimeError(
                "offload.configure() must be called before the runtime is first used"
                " (before the first spawn/run/start); create an offload.Runtime(...) instead"
            )
        merged = {**self._given, **options}
        self._options = validate(merged)
        self._given = merged
        self._configure(_engine_options(self._options))
        self._durable = None
        self._install_process_pool()
        self._apply_keep_finished()

    def _apply_keep_finished(self) -> None:
        self._keep_finished(
            self._options["keep_finished"], self._options["keep_finished_ttl"] or 0.0
        )

    def _install_process_pool(self) -> None:
        self._pool = ProcessPool(self._options["processes"])
        self._pool_stuck: list[str] = []
        self._set_lane_starter("processes", self._pool.start_task, prepare)
        self._set_lane_killer("processes", self._pool.kill_task)

    # -- starting, and periodic work ----------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Make the running loop the home loop (e.g. in the app's lifespan), and start
        the schedules `@offload.periodic` registered for this runtime."""
        super().start(loop)
        _periodic.start_registered(self)
        if self._works_durable_queue():
            self.durable.start()

    @property
    def durable(self) -> Durable:
        """This runtime's durable tier: `runtime.durable.spawn(fn, ...)` (docs/durable.md)."""
        durable = self._durable
        if durable is None:
            from .durable._api import Durable

            durable = self._durable = Durable(self, self._options)
        return durable

    def _works_durable_queue(self) -> bool:
        """Whether start() opens the store and works its queue: a store was configured,
        or the durable tier was used; for the default runtime also when OFFLOAD_STORE
        names one or a durable task function or schedule was declared (an app that
        restarts after a crash then runs what its last life left in the store)."""
        if self._durable is not None or self._options["store"] is not None:
            return True
        from . import default_runtime
        from .durable import _registry

        return self is default_runtime() and (
            bool(os.environ.get("OFFLOAD_STORE")) or _registry.declared()
        )

    def schedules(self) -> list[_periodic.Schedule]:
        """The schedules running on this runtime (offload.every, cron, @periodic)."""
        return self._periodic.schedules()

    # -- failure reporting (called by the engine, with the GIL) ------------------
    def _report(self, kind: str, task: Task[Any], exc: BaseException | None) -> None:
        if kind == "failed" and exc is not None:
            handler = self._options["error_handler"]
            if handler is not None:
                try:
                    handler(task, exc)
                except BaseException as handler_exc:
                    logger.error(
                        "offload error_handler raised while handling task %s",
                        _describe(task),
                        exc_info=(type(handler_exc), handler_exc, handler_exc.__traceback__),
                        extra={"offload_task": task},
                    )
                return
            logger.error(
                "offload task %s failed",
                _describe(task),
                exc_info=(type(exc), exc, exc.__traceback__),
                extra={"offload_task": task},
            )
        elif kind == "dropped":
            logger.warning("offload task %s dropped: lane %s is full", _describe(task), task.lane)
        elif kind == "callback":
            logger.error(
                "offload done-callback of task %s raised",
                _describe(task),
                exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None,
            )
        elif kind == "interrupted":
            logger.warning(
                "offload task %s was cancelled from outside offload (its event loop"
                " is shutting down?) and did not finish",
                _describe(task),
                extra={"offload_task": task},
            )
        elif kind == "retrying":
            logger.debug(
                "offload task %s attempt %d failed (%s); it will be retried",
                _describe(task),
                task.attempt,
                _safe_repr(exc),
            )
        elif kind == "timer":
            logger.error(
                "offload timer callback raised",
                exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None,
            )
        elif kind == "unfinished":
            logger.warning("offload task %s did not finish before shutdown", _describe(task))
        elif kind == "stuck":
            logger.error("offload: %s", exc)

    # -- lookup (status endpoints) ---------------------------------------------------------
    def get(self, task_id: int) -> TaskInfo | None:
        """What is known about task `task_id`: live, or among the `keep_finished` most
        recent finished ones; None if unknown (or forgotten)."""
        task_id = check_task_id(task_id)
        if not 0 < task_id < 2**64:
            return None  # no task ever has such an id
        record = self._task_info(task_id)
        return None if record is None else info_from_engine(record)

    def tasks(
        self,
        *,
        name: str | None = None,
        state: str | None = None,
        key: str | None = None,
        lane: str | None = None,
        limit: int | None = None,
    ) -> list[TaskInfo]:
        """Live tasks, then the kept finished ones (newest first), filtered."""
        check_filters(state, lane, limit)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, not {type(name).__name__}")
        if key is not None and not isinstance(key, str):
            raise TypeError(f"key must be a str or None, not {type(key).__name__}")
        records = self._task_infos(
            None if name is None else str.__str__(name),
            ENGINE_STATES.index(state) if state is not None else -1,
            None if key is None else str.__str__(key),
            ENGINE_LANES.index(lane) if lane is not None else -1,
            -1 if limit is None else limit,
        )
        return [info_from_engine(record) for record in records]

    def attempts(self) -> dict[str, dict[str, int]]:
        """Per task name (tasks spawned with controls): attempts started and retries."""
        return self._attempts()

    # -- calling async code from sync code -----------------------------------------------
    # Typed so the target's parameters check the arguments and the result is what the
    # coroutine returns. PEP 612 allows no keyword (`timeout`) beside a ParamSpec's
    # **kwargs, so the form with `timeout` is marked invalid here, where it is defined;
    # pyright still checks its arguments at call sites and mypy its result type
    # (tests/typing/ pins both).
    @overload
    def call(
        self, target: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R: ...
    @overload
    def call(  # type: ignore[valid-type]
        self,
        target: Callable[P, Coroutine[Any, Any, R]],
        /,
        *args: P.args,
        timeout: float | None,
        **kwargs: P.kwargs,
    ) -> R: ...
    @overload
    def call(self, target: Coroutine[Any, Any, R], /, *, timeout: float | None = None) -> R: ...
    def call(  # type: ignore[misc]  # (a `timeout` in P.kwargs is call's own, by design)
        self, target: Any, /, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """Run a coroutine (or async function) on the home loop, else a background loop,
        and block this thread (never an event loop's) until it returns or raises.

        Exceptions and cancellation cross over as they are; contextvars too. On timeout
        the coroutine is cancelled and TimeoutError raised.
        """
        timeout = _checked_timeout(timeout)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "offload.call() would block the running event loop (and deadlock if the"
                " coroutine needs it); in async code use 'await offload.run(...)'"
            )
        if not callable(target) and not asyncio.iscoroutine(target):
            raise TypeError(
                "offload.call() needs a coroutine or an async function, not"
                f" {type(target).__name__}"
            )
        if callable(target) and not _is_async_callable(target):
            raise TypeError(
                f"offload.call() runs async code, and {safe_repr(target)} is a sync callable;"
                " call it directly"
            )
        task = self.loop._spawn_observed(target, *args, **kwargs)
        try:
            finished = task._wait(timeout)
        except BaseException:  # Ctrl-C in the wait: the coroutine must not run on unseen
            _give_up(task)
            raise
        if not finished:
            _give_up(task)
            raise TimeoutError(
                f"offload.call() of {task.name!r} did not finish within {timeout} s;"
                " it was cancelled"
            )
        return task.result()

    # -- drain / shutdown ----------------------------------------------------------
    async def drain(self, timeout: float | None = None) -> set[Task[Any]]:
        """Wait for every task spawned so far; return those still unfinished."""
        timeout = _checked_timeout(timeout)
        self._abandoned.update(self._abandon_dead_loops())
        caller = self._calling_task()
        tasks = [t for t in self._live_tasks() if t is not caller]
        if not tasks:
            return set()

        async def wait_all() -> None:
            for task in tasks:
                if not task.done():
                    await task._quiet_wait()

        try:
            if timeout is None:
                await wait_all()
            else:
                await asyncio.wait_for(wait_all(), timeout)
        except asyncio.TimeoutError:
            pass
        return {t for t in tasks if not t.done()}

    def _calling_task(self) -> Task[Any] | None:
        """The offload task of this runtime running this code, if any: drain and
        shutdown must not wait for (or cancel) the task that calls them. A threads-lane
        task is known to its pool thread; a coroutine's asyncio.Task drives the engine's
        runner, which shows its coroutine's frame."""
        on_thread = _engine._current_thread_task()
        if on_thread is not None:
            return on_thread if any(t is on_thread for t in self._live_tasks()) else None
        try:
            current = asyncio.current_task()
        except RuntimeError:
            return None
        frame = getattr(current.get_coro(), "cr_frame", None) if current is not None else None
        if frame is None:
            return None
        for task in self._live_tasks():
            if task.lane in ("loop", "background") and _frame_of(task._target) is frame:
                return task
        return None

    def drain_sync(self, timeout: float | None = None) -> set[Task[Any]]:
        """`drain` for sync code (not on an event-loop thread)."""
        timeout = _checked_timeout(timeout)
        _refuse_on_loop_thread("drain_sync")
        self._abandoned.update(self._abandon_dead_loops())
        caller = self._calling_task()
        deadline = None if timeout is None else time.monotonic() + timeout
        for task in self._live_tasks():
            if task is caller:
                continue
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            task._wait(remaining)
            self._abandoned.update(self._abandon_dead_loops())
        return {t for t in self._live_tasks() if not t.done() and t is not caller}

    async def shutdown(self, timeout: float | None = None) -> set[Task[Any]]:
        """Stop accepting, drain up to `timeout`, cancel what is left, stop lanes.

        Returns the tasks that did not finish (each is also logged by name).
        """
        timeout = _checked_timeout(timeout)
        caller = self._calling_task()
        if caller is not None and caller.lane == "background":
            raise RuntimeError(
                f"shutdown() called from task {caller.name!r} on offload's background lane"
                " would stop the event loop that task runs on; await it from the home loop"
                " (offload.loop) or call close() from a thread of your own"
            )
        drain_for, cancel_for, join_for = _phases(timeout)
        self._periodic.cancel_all()
        self._stop_durable_claims()
        self._close()
        self._periodic.cancel_all()  # one made while it closed
        unfinished = await self.drain(drain_for)
        if unfinished:
            unfinished -= await asyncio.to_thread(self._release_durable)
            for task in unfinished:
                task.cancel()
            await self.drain(cancel_for)
        self._close_durable(join_for)
        await self._close_loop_locals_async(join_for)
        stopper = threading.Thread(target=self._stop_pool, args=(join_for,), daemon=True)
        stopper.start()
        self._request_stop()
        deadline = time.monotonic() + join_for
        while stopper.is_alive() and time.monotonic() < deadline + 1.0:
            await asyncio.sleep(0.01)
        while not self._join(0) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self._finish_shutdown(unfinished)

    def close(self, timeout: float | None = None) -> set[Task[Any]]:
        """Synchronous shutdown, for `with` blocks and interpreter exit."""
        timeout = _checked_timeout(timeout)
        _refuse_on_loop_thread("close")
        caller = self._calling_task()
        if caller is not None:
            raise RuntimeError(
                f"close() called from task {caller.name!r} on offload's {caller.lane} lane"
                " would wait for the thread it runs on; close the runtime from outside its"
                " own tasks (drain_sync() from a task leaves that task out)"
            )
        drain_for, cancel_for, join_for = _phases(timeout)
        self._periodic.cancel_all()
        self._stop_durable_claims()
        self._close()
        self._periodic.cancel_all()  # one made while it closed
        unfinished = self.drain_sync(drain_for)
        if unfinished:
            unfinished -= self._release_durable()
            for task in unfinished:
                task.cancel()
            self.drain_sync(cancel_for)
        self._close_durable(join_for)
        self._close_loop_locals_sync(join_for)
        self._stop_pool(join_for)
        self._request_stop()
        self._join(join_for)
        return self._finish_shutdown(unfinished)

    # -- the durable tier at shutdown -----------------------------------------------------
    def _stop_durable_claims(self) -> None:
        if self._durable is not None:
            self._durable.stop_claiming()

    def _release_durable(self) -> set[Task[Any]]:
        """Durable attempts still running after the drain go back to the store, untried,
        for another worker; they are cancelled here without counting as unfinished."""
        if self._durable is None:
            return set()
        released = set(self._durable.release_unfinished())
        for task in released:
            task.cancel()
        return released

    def _close_durable(self, timeout: float) -> None:
        if self._durable is not None:
            self._durable.close(max(timeout, 1.0))

    # loop_local instances live on the loops this runtime stops: close them there first.
    def _owned_loops(self) -> list[asyncio.AbstractEventLoop]:
        loops = list(self.background_loops())
        if self.home_loop is not None and not self.home_loop.is_closed():
            loops.append(self.home_loop)
        return loops

    async def _close_loop_locals_async(self, timeout: float) -> None:
        current = asyncio.get_running_loop()
        waits = []
        for loop in self._owned_loops():
            if loop is current:
                self._log_close_errors(await close_loop_locals(loop))
            elif loop.is_running():
                future = asyncio.run_coroutine_threadsafe(close_loop_locals(loop), loop)
                waits.append(asyncio.wrap_future(future))
        if waits:
            done, _ = await asyncio.wait(waits, timeout=max(timeout, 0.1))
            for fut in done:
                if fut.exception() is None:
                    self._log_close_errors(fut.result())

    def _close_loop_locals_sync(self, timeout: float) -> None:
        for loop in self._owned_loops():
            if not loop.is_running():
                continue
            future = asyncio.run_coroutine_threadsafe(close_loop_locals(loop), loop)
            wait = _thread_wait(timeout)
            try:
                self._log_close_errors(future.result(wait))
            except concurrent.futures.TimeoutError:
                logger.warning(
                    "offload: closing loop_local instances on %s timed out after %.3g s",
                    _safe_repr(loop),
                    wait,
                )
            except Exception as exc:  # log the real cause, keep shutting down
                logger.error(
                    "offload: closing loop_local instances on %s failed",
                    _safe_repr(loop),
                    exc_info=(type(exc), exc, exc.__traceback__),
                )

    @staticmethod
    def _log_close_errors(errors: list[BaseException]) -> None:
        for exc in errors:
            logger.error(
                "offload: a loop_local close() failed",
                exc_info=(type(exc), exc, exc.__traceback__),
            )

    def _stop_pool(self, timeout: float) -> None:
        self._pool_stuck = self._pool.stop(timeout)

    def _finish_shutdown(self, unfinished: Iterable[Task[Any]]) -> set[Task[Any]]:
        for description in [*self._stuck_threads(), *self._pool_stuck]:
            self._report("stuck", None, RuntimeError(description))  # type: ignore[arg-type]
        # A task that missed the drain but then completed on its own (before the
        # cancel reached it) did finish: only cancelled or still-running ones count.
        result = {t for t in {*unfinished, *self._abandoned} if t.state not in _COMPLETED}
        self._abandoned.clear()
        for task in sorted(result, key=lambda t: t.id):
            self._report("unfinished", task, None)
        return result

    # -- context managers -----------------------------------------------------------
    def __enter__(self) -> Runtime:  # noqa: PYI034
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self.closed:
            self.close(self._options["shutdown_timeout"])

    async def __aenter__(self) -> Runtime:  # noqa: PYI034
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if not self.closed:
            await self.shutdown(self._options["shutdown_timeout"])


def _frame_of(coroutine: Any) -> Any:
    try:
        return getattr(coroutine, "cr_frame", None)
    except Exception:  # noqa: BLE001 (a user awaitable's attribute may raise)
        return None


def _give_up(task: Task[Any]) -> None:
    """offload.call() stops waiting: cancel the task, and since nobody will receive its
    outcome any more, a failure it ends with (a cleanup raising) is reported."""
    task.cancel()
    task._unobserve()
    task._wait(1.0)  # a moment for its `finally:` blocks (a second Ctrl-C ends it)


def _is_async_callable(target: Any) -> bool:
    if inspect.iscoroutinefunction(target):
        return True
    # an instance whose class defines `async def __call__`
    return callable(target) and inspect.iscoroutinefunction(type(target).__call__)


def _checked_timeout(timeout: float | None) -> float | None:
    """A valid timeout in seconds; an infinite one (inf, or an int beyond any float)
    is no timeout at all (None), so no deadline is ever computed from it."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(
            f"timeout must be a number of seconds or None, not {type(timeout).__name__}"
        )
    try:
        seconds = float(timeout)
    except OverflowError:
        return None
    if math.isnan(seconds):
        raise ValueError("timeout must be a number of seconds >= 0 or None, not nan")
    if seconds < 0:
        raise ValueError(f"timeout must be >= 0, got {timeout}")
    return None if math.isinf(seconds) else seconds


#: What to await instead of each blocking call, on an event-loop thread.
_ASYNC_EQUIVALENT = {"close": "shutdown", "drain_sync": "drain"}


def _refuse_on_loop_thread(what: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        f"{what}() would block the running event loop;"
        f" use 'await runtime.{_ASYNC_EQUIVALENT[what]}()'"
    )


def _shutdown_all_at_exit() -> None:
    for runtime in list(_live_runtimes):
        if runtime.started and not runtime.closed:
            try:
                runtime.close(runtime.options_in_effect["shutdown_timeout"])
            except BaseException:
                logger.exception("offload: shutdown at interpreter exit failed")


def _reset_all_after_fork() -> None:
    for runtime in list(_live_runtimes):
        runtime._reset_after_fork()
        runtime._pool.forget_after_fork()
        runtime._periodic.forget_after_fork()
        if runtime._durable is not None:
            runtime._durable.forget_after_fork()


def _engine_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options as the engine takes them: the processes lane's default concurrency
    lets each worker hold a batch, so tasks reach the pool in batches."""
    lanes = {name: dict(lane) for name, lane in options["lanes"].items()}
    if lanes["processes"]["max_running"] is None:
        lanes["processes"]["max_running"] = pool_size(options["processes"]) * MAX_BATCH
    engine = {k: v for k, v in options.items() if k not in DURABLE_KEYS}
    return {**engine, "lanes": lanes}
