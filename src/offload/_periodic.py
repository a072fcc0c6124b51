"""Periodic work: `offload.every`, `offload.cron`, `@offload.periodic`, and `Schedule`.

Owns each runtime's schedules (`Runtime.schedules()`) and the registrations that
`@offload.periodic` makes, which start when their runtime starts. The timing lives in
the engine: a schedule keeps exactly one armed engine timer (`Engine._call_later`, on
the engine's one timer thread); when it fires, the schedule spawns its run through the
runtime's ordinary spawn path (so lane limits, `on_full`, stats and drain hold) and arms
the next one. Python only works out when the next run is due: a fixed rate on the
engine's monotonic clock for `every`, the next cron time on the wall clock (cronsim, in
the schedule's time zone) for `cron`.

Lock rule: a Schedule's `_lock` guards its state (timer handle, counters, queued run).
It is taken by the timer callbacks and by `cancel()`; nothing done under it waits for
another thread (arming a timer takes only the timer heap's short mutex, and a run bound
for an on_full="block" lane is handed to the engine's timer rather than waited for), and
`cancel()` cancels the timer after letting it go. `_Registry._lock` guards a runtime's
list of schedules and registrations; no other lock is taken while it is held.
"""

from __future__ import annotations

import inspect
import logging
import math
import random
import threading
from collections.abc import Callable
from datetime import datetime, timezone, tzinfo
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ._engine import Closed, Full, Task
from ._options import LANES, safe_repr
from ._processes import prepare

if TYPE_CHECKING:
    from ._engine import LaneName, TimerHandle
    from ._runtime import Runtime

logger = logging.getLogger("offload")

Overlap = Literal["skip", "queue", "allow"]
OVERLAPS = ("skip", "queue", "allow")

F = TypeVar("F", bound=Callable[..., Any])


# --- validation (at the call site) ------------------------------------------------------


def _seconds(where: str, value: object, *, zero_ok: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{where} must be a number of seconds, not {type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        shown = repr(value) if math.isfinite(seconds) or isinstance(value, float) else "a huge int"
        raise ValueError(f"{where} must be a finite number of seconds {bound}, got {shown}")
    return seconds


def _lane(lane: object) -> LaneName | None:
    if lane is not None and lane not in LANES:
        raise ValueError(f"lane must be one of {', '.join(LANES)} or None, got {lane!r}")
    return lane  # type: ignore[return-value]


def _target(fn: object, lane: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse, now rather than at every run, a target the runs could never start."""
    if inspect.iscoroutine(fn):
        raise TypeError(
            "a schedule runs its target many times: pass the async function itself,"
            " not a coroutine object (a coroutine runs only once)"
        )
    if not callable(fn):
        raise TypeError(f"a schedule needs a callable to run, not {type(fn).__name__}")
    _lane(lane)
    is_async = _is_async(fn)
    if lane in ("loop", "background") and not is_async:
        raise TypeError(
            f"offload.{lane} runs coroutines, and {safe_repr(fn)} is a sync callable;"
            " use lane='threads' (or no lane) for it"
        )
    if lane in ("threads", "processes") and is_async:
        raise TypeError(
            f"offload.{lane} runs sync callables, and {safe_repr(fn)} is an async function;"
            " use lane='loop' or 'background' (or no lane) for it"
        )
    if lane == "processes":
        prepare(fn, args, kwargs)  # what can't be pickled for a worker fails now
    try:
        signature = inspect.signature(fn)
    except Exception:  # noqa: BLE001 (no signature, or a user object's odd one: runs tell)
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(
            f"the arguments given don't fit {safe_repr(fn)}: {exc}; pass what each run"
            " calls it with"
        ) from None


def _is_async(fn: object) -> bool:
    # an async function, or an instance whose class defines `async def __call__`
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


def _lanes_reached(fn: object, lane: LaneName | None) -> tuple[LaneName, ...]:
    """The lanes a run may land on: the loop lane hands over to the background one
    while there is no home loop."""
    if lane is None:
        lane = "loop" if _is_async(fn) else "threads"
    return ("loop", "background") if lane == "loop" else (lane,)


def _overlap(value: object) -> Overlap:
    if value not in OVERLAPS:
        raise ValueError(f"overlap must be one of {', '.join(map(repr, OVERLAPS))}, got {value!r}")
    return value  # type: ignore[return-value]


def _name(name: object, fn: object) -> str:
    if name is None:
        try:
            found = getattr(fn, "__qualname__", None)
        except Exception:  # noqa: BLE001 (a user's property may raise anything)
            found = None
        return found if isinstance(found, str) else safe_repr(fn)
    if not isinstance(name, str):
        raise TypeError(f"name must be a str or None, not {type(name).__name__}")
    return name


def _zone(tz: object) -> tzinfo:
    """The schedule's time zone: UTC by default, an IANA name, or an aware tzinfo."""
    if tz is None:
        return timezone.utc
    if isinstance(tz, str):
        try:
            return ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {tz!r}; pass an IANA name such as 'Europe/Paris' or 'UTC',"
                " or a tzinfo"
            ) from None
    if not isinstance(tz, tzinfo):
        raise TypeError(
            f"tz must be a time zone name (str), a tzinfo or None, not {type(tz).__name__}"
        )
    try:
        offset = tz.utcoffset(datetime.now(timezone.utc).replace(tzinfo=None))
        if offset is not None:
            datetime.now(tz)  # and it converts from UTC
    except Exception as exc:  # noqa: BLE001 (a user tzinfo's methods may raise anything)
        raise ValueError(
            f"tz {safe_repr(tz)} can't tell its UTC offset ({type(exc).__name__}); pass an"
            " IANA name such as 'Europe/Paris' or a working tzinfo"
        ) from None
    if offset is None:
        raise ValueError(
            f"tz {safe_repr(tz)} is naive (its utcoffset() is None); pass an IANA name such"
            " as 'Europe/Paris' or an aware tzinfo such as datetime.timezone.utc"
        )
    return tz


def _runtime(runtime: object) -> Runtime:
    from . import default_runtime
    from ._runtime import Runtime

    if runtime is None:
        return default_runtime()
    if not isinstance(runtime, Runtime):
        raise TypeError(f"runtime must be an offload.Runtime or None, not {type(runtime).__name__}")
    return runtime


# --- when the next run is due -------------------------------------------------------------


class _Every:
    """A fixed rate on the engine's monotonic clock: runs are `seconds` apart (plus
    up to `jitter` each), and a late timer does not shift the ones after it."""

    def __init__(self, seconds: float, jitter: float) -> None:
        self.seconds, self.jitter = seconds, jitter
        self._due = 0.0  # engine clock of the next run, before its jitter

    def describe(self) -> str:
        jitter = f" (+ up to {self.jitter:g} s)" if self.jitter else ""
        return f"every {self.seconds:g} s{jitter}"

    def first_delay(self, runtime: Runtime) -> float:
        self._due = runtime._clock() + self.seconds
        return self.seconds + self._jitter()

    def next_delay(self, runtime: Runtime) -> float:
        now = runtime._clock()
        self._due += self.seconds
        if self._due <= now:  # the clock jumped past whole periods: those runs are gone
            self._due += (math.floor((now - self._due) / self.seconds) + 1) * self.seconds
        return self._due - now + self._jitter()

    def _jitter(self) -> float:
        return random.uniform(0.0, self.jitter) if self.jitter else 0.0


class _WallEvery:
    """A durable `every=` schedule: runs at the multiples of `seconds` on the wall
    clock (since the epoch), so that every process running it names the same slots."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.due_wall = 0.0  # the wall-clock time of the run the timer is set for

    def describe(self) -> str:
        return f"every {self.seconds:g} s (durable, on the wall clock)"

    def first_delay(self, runtime: Runtime) -> float:
        return self._delay_to_next(runtime, runtime._wall_time())

    def next_delay(self, runtime: Runtime) -> float:
        return self._delay_to_next(runtime, max(runtime._wall_time(), self.due_wall))

    def _delay_to_next(self, runtime: Runtime, after: float) -> float:
        self.due_wall = (math.floor(after / self.seconds) + 1) * self.seconds
        return self.due_wall - runtime._wall_time()


class _Cron:
    """The next time the cron expression matches, on the wall clock, in `zone`."""

    def __init__(self, expr: object, zone: tzinfo) -> None:
        if not isinstance(expr, str):
            raise TypeError(
                f"a cron expression must be a str such as '*/5 * * * *', not {type(expr).__name__}"
            )
        self.expr, self.zone = expr, zone
        self._parse(datetime.now(zone))  # refuse a bad expression now
        self._next: datetime | None = None

    def _parse(self, after: datetime) -> Any:
        from cronsim import CronSim, CronSimError

        try:
            return CronSim(self.expr, after)
        except CronSimError as exc:
            raise ValueError(
                f"cron expression {self.expr!r} is not valid ({exc}); pass five fields:"
                " minute hour day-of-month month day-of-week, e.g. '*/5 * * * *'"
            ) from None

    @property
    def next(self) -> datetime | None:
        return self._next

    def describe(self) -> str:
        return f"cron {self.expr!r} ({self.zone})"

    def first_delay(self, runtime: Runtime) -> float:
        return self._delay_to_next(runtime, runtime._wall_time())

    def next_delay(self, runtime: Runtime) -> float:
        now = runtime._wall_time()
        # from the run just due, or from now if the clock went past it: a timer firing
        # a hair early never runs the same minute twice, a late one skips what it missed
        after = now if self._next is None else max(now, self._next.timestamp())
        return self._delay_to_next(runtime, after)

    def _delay_to_next(self, runtime: Runtime, after: float) -> float:
        self._next = next(iter(self._parse(datetime.fromtimestamp(after, self.zone))))
        return self._next.timestamp() - runtime._wall_time()


_Timing = _Every | _Cron | _WallEvery


def _due_wall(timing: _Timing) -> float:
    """The wall-clock time of the run a durable schedule's timer just fired for."""
    if isinstance(timing, _Cron):
        return timing.next.timestamp() if timing.next is not None else 0.0
    if isinstance(timing, _WallEvery):
        return timing.due_wall
    raise AssertionError("a durable schedule runs on the wall clock")


# --- a schedule ---------------------------------------------------------------------------


class Schedule:
    """Periodic runs of one callable on one runtime: `offload.every(...)`,
    `offload.cron(...)` or `@offload.periodic(...)` made it.

    `runs` counts runs started, `skipped` runs not started because the previous one
    was still going (overlap "skip", or "queue" with a run already queued); `last_task`
    is the Task of the latest run; `next_run` when the next is due (an aware datetime,
    None once cancelled). `cancel()` stops future runs; a run in progress goes on.
    """

    def __init__(
        self,
        runtime: Runtime,
        timing: _Timing,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        name: str,
        overlap: Overlap,
        lane: LaneName | None,
        durable: bool = False,
    ) -> None:
        self._runtime, self._timing = runtime, timing
        #: Runs go to the durable store, one per slot across every process (`_spawn`).
        self._durable = durable
        self._fn, self._args, self._kwargs = fn, args, kwargs
        self._name, self._overlap = name, overlap
        self._lane = runtime.options(name=name, lane=lane)
        # A lane with on_full="block" would block the engine's timer thread (and every
        # other timer of the runtime) while it is full: runs bound for one are admitted
        # by the engine's timer instead (delay=0), which waits for room without blocking.
        self._lane_via_timer = runtime.options(name=name, lane=lane, delay=0.0)
        self._lanes_reached = _lanes_reached(fn, lane)
        self._lock = threading.Lock()
        self._handle: TimerHandle | None = None
        self._next_wall: float | None = None
        self._cancelled = False
        self._queued = False
        self._runs = 0
        self._skipped = 0
        self._last_task: Task[Any] | None = None

    # -- what a user reads -------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def overlap(self) -> Overlap:
        return self._overlap

    @property
    def trigger(self) -> str:
        """What makes it run, for people: "every 30 s", "cron '0 3 * * *' (UTC)"."""
        return self._timing.describe()

    @property
    def runs(self) -> int:
        return self._runs

    @property
    def skipped(self) -> int:
        return self._skipped

    @property
    def queued(self) -> bool:
        """overlap="queue": a run waits for the one in progress to end."""
        return self._queued

    @property
    def last_task(self) -> Task[Any] | None:
        return self._last_task

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def next_run(self) -> datetime | None:
        wall = self._next_wall
        if wall is None:
            return None
        if isinstance(self._timing, _Cron):  # the cron time itself, not a float's rounding
            return self._timing.next
        return datetime.fromtimestamp(wall, timezone.utc)

    def cancel(self) -> bool:
        """Stop future runs (a queued one included); False if already stopped. The run
        in progress goes on: cancel `last_task` too to stop it."""
        with self._lock:
            if self._cancelled:
                return False
            self._stop()
            handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()
        self._runtime._periodic.forget(self)
        return True

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able summary, for status pages and the dashboard."""
        last, when = self._last_task, self.next_run
        return {
            "name": self._name,
            "trigger": self.trigger,
            "overlap": self._overlap,
            "next_run": None if when is None else when.isoformat(),
            "runs": self._runs,
            "skipped": self._skipped,
            "queued": self._queued,
            "cancelled": self._cancelled,
            "last_task_id": None if last is None else last.id,
            "last_task_state": None if last is None else last.state,
        }

    def __repr__(self) -> str:
        state = "cancelled" if self._cancelled else f"next_run={self.next_run}"
        return (
            f"<offload.Schedule {safe_repr(self._name)} {self.trigger} overlap={self._overlap}"
            f" runs={self._runs} skipped={self._skipped} {state}>"
        )

    # -- the timer's side (the engine's timer thread, with the GIL) ---------------------
    def _start(self) -> None:
        with self._lock:
            self._arm(self._timing.first_delay(self._runtime))

    def _arm(self, delay: float) -> None:
        """Under _lock: set the engine timer of the next run."""
        delay = max(0.0, delay)
        self._handle = self._runtime._call_later(delay, self._fire)
        self._next_wall = self._runtime._wall_time() + delay

    def _stop(self) -> None:
        """Under _lock: no more runs."""
        self._cancelled = True
        self._queued = False
        self._next_wall = None

    def _forget_after_fork(self) -> None:
        self._lock = threading.Lock()  # another thread of the parent may have held it
        self._handle = None
        self._stop()

    def _fire(self) -> None:
        with self._lock:
            if self._cancelled:
                return
            self._handle = None
            slot = _due_wall(self._timing) if self._durable else 0.0
            try:  # the next timer first: whatever this run does, the schedule goes on
                self._arm(self._timing.next_delay(self._runtime))
            except Closed:
                self._stop()
            except Exception as exc:  # reported; the schedule can't go on
                self._stop()
                logger.error(
                    "offload schedule %s stopped: its next run could not be set",
                    safe_repr(self._name),
                    exc_info=(type(exc), exc, exc.__traceback__),
                )
            if self._durable:
                self._fire_durable(slot)
            elif self._overlap == "allow" or self._idle():
                self._queued = False  # a queued run whose start is on its way: this is it
                self._spawn()
            elif self._overlap == "queue" and not self._queued:
                self._queued = True
                assert self._last_task is not None
                self._last_task.add_done_callback(self._previous_done)
            else:
                self._skipped += 1
                logger.debug(
                    "offload schedule %s: run skipped, the previous one is still going",
                    safe_repr(self._name),
                )
        if self._cancelled:
            self._runtime._periodic.forget(self)

    def _fire_durable(self, slot: float) -> None:
        """Under _lock: hand this slot's run to the durable store (never blocks)."""
        try:
            self._runtime.durable.fire_slot(
                self._name, slot, self._fn, skip_overlap=self._overlap == "skip"
            )
        except Exception as exc:  # reported; the next slot tries again
            logger.error(
                "offload schedule %s: durable run could not be queued",
                safe_repr(self._name),
                exc_info=(type(exc), exc, exc.__traceback__),
            )
            return
        self._runs += 1

    def _idle(self) -> bool:
        return self._last_task is None or self._last_task.done()

    def _previous_done(self, task: Task[Any]) -> None:
        """Done callback of the run a queued one waits for (on whichever thread ended
        it): the queued run starts from the timer thread, like every other run."""
        try:
            self._runtime._call_later(0.0, self._start_queued)
        except Closed:
            pass  # shutting down: the queued run is dropped with the schedule
        except Exception as exc:  # reported; the queued run is lost
            logger.error(
                "offload schedule %s: its queued run could not start",
                safe_repr(self._name),
                exc_info=(type(exc), exc, exc.__traceback__),
            )

    def _start_queued(self) -> None:
        with self._lock:
            if self._cancelled or not self._queued:
                return
            self._queued = False
            self._spawn()

    def _spawn(self) -> None:
        """Under _lock: start one run through the runtime's ordinary spawn path."""
        lanes = self._runtime.options_in_effect["lanes"]
        blocks = any(lanes[name]["on_full"] == "block" for name in self._lanes_reached)
        lane = self._lane_via_timer if blocks else self._lane
        try:
            task = lane.spawn(self._fn, *self._args, **self._kwargs)
        except Closed:
            self._stop()  # the runtime is shutting down: so is the schedule
            return
        except Full as exc:
            logger.warning(
                "offload schedule %s: run not started, its lane is full (%s)",
                safe_repr(self._name),
                exc,
            )
            return
        except Exception as exc:  # reported; the next run tries again
            logger.error(
                "offload schedule %s: run could not start",
                safe_repr(self._name),
                exc_info=(type(exc), exc, exc.__traceback__),
            )
            return
        self._runs += 1
        self._last_task = task


# --- a runtime's schedules and registrations ----------------------------------------------


class _Registration:
    """What `@offload.periodic` registered: a schedule to make when its runtime starts."""

    def __init__(
        self,
        make_timing: Callable[[], _Timing],
        fn: Callable[..., Any],
        *,
        name: str,
        overlap: Overlap,
        lane: LaneName | None,
        durable: bool = False,
    ) -> None:
        self.make_timing, self.fn = make_timing, fn
        self.name, self.overlap, self.lane = name, overlap, lane
        self.durable = durable

    def start_on(self, runtime: Runtime) -> Schedule:
        schedule = Schedule(
            runtime,
            self.make_timing(),
            self.fn,
            (),
            {},
            name=self.name,
            overlap=self.overlap,
            lane=self.lane,
            durable=self.durable,
        )
        runtime._periodic.add(schedule)
        return schedule


class _Registry:
    """One runtime's live schedules, and the registrations it starts when it starts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: list[Schedule] = []
        self._registered: list[_Registration] = []
        self._started: set[_Registration] = set()

    def schedules(self) -> list[Schedule]:
        with self._lock:
            return list(self._live)

    def add(self, schedule: Schedule) -> None:
        with self._lock:
            self._live.append(schedule)
        try:
            schedule._start()
        except BaseException:
            self.forget(schedule)
            raise

    def forget(self, schedule: Schedule) -> None:
        with self._lock:
            if schedule in self._live:
                self._live.remove(schedule)

    def register(self, registration: _Registration) -> None:
        with self._lock:
            self._registered.append(registration)

    def claim(self, registrations: list[_Registration]) -> list[_Registration]:
        """Those of `registrations` not started on this runtime yet, now marked started."""
        with self._lock:
            todo = [r for r in registrations if r not in self._started]
            self._started.update(todo)
            return todo

    def own_registrations(self) -> list[_Registration]:
        with self._lock:
            return list(self._registered)

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's schedules go on in the parent only (their
        timers did not survive the fork); registrations already started stay so."""
        self._lock = threading.Lock()
        for schedule in self._live:
            schedule._forget_after_fork()
        self._live.clear()

    def cancel_all(self) -> None:
        """The runtime shuts down: no schedule of it runs again."""
        with self._lock:
            live = list(self._live)
        for schedule in live:
            schedule.cancel()


#: `@offload.periodic` without `runtime=`: the default runtime's, kept here since the
#: default runtime is renewed when an app starts again (each renewal starts them too).
_for_default_runtime: list[_Registration] = []
_for_default_lock = threading.Lock()


def start_registered(runtime: Runtime) -> None:
    """`Runtime.start()` calls this: start what `@offload.periodic` registered for it."""
    from . import default_runtime

    registrations = runtime._periodic.own_registrations()
    if runtime is default_runtime():
        with _for_default_lock:
            registrations += _for_default_runtime
    for registration in runtime._periodic.claim(registrations):
        registration.start_on(runtime)


# --- the public entry points ----------------------------------------------------------------


def every(
    seconds: float,
    fn: Callable[..., Any],
    /,
    *args: Any,
    jitter: float = 0.0,
    name: str | None = None,
    overlap: Overlap = "skip",
    lane: LaneName | None = None,
    runtime: Runtime | None = None,
    **kwargs: Any,
) -> Schedule:
    """Run `fn(*args, **kwargs)` every `seconds` (the first run one period from now),
    each run up to `jitter` seconds later, on `runtime` (default: the default one)."""
    timing = _Every(_seconds("every() seconds", seconds, zero_ok=False), _jitter(jitter))
    return _schedule(runtime, timing, fn, args, kwargs, name, overlap, lane)


def cron(
    expr: str,
    fn: Callable[..., Any],
    /,
    *args: Any,
    tz: str | tzinfo | None = None,
    name: str | None = None,
    overlap: Overlap = "skip",
    lane: LaneName | None = None,
    runtime: Runtime | None = None,
    **kwargs: Any,
) -> Schedule:
    """Run `fn(*args, **kwargs)` whenever the cron expression matches, in time zone
    `tz` (an IANA name or an aware tzinfo; default UTC), on `runtime`."""
    timing = _Cron(expr, _zone(tz))
    return _schedule(runtime, timing, fn, args, kwargs, name, overlap, lane)


def _jitter(jitter: object) -> float:
    return _seconds("jitter", jitter, zero_ok=True)


def _schedule(
    runtime: object,
    timing: _Timing,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    name: object,
    overlap: object,
    lane: object,
) -> Schedule:
    _target(fn, lane, args, kwargs)
    rt = _runtime(runtime)
    _refuse_closed(rt)
    schedule = Schedule(
        rt,
        timing,
        fn,
        args,
        kwargs,
        name=_name(name, fn),
        overlap=_overlap(overlap),
        lane=lane,  # type: ignore[arg-type]  # (checked by _target)
    )
    rt._periodic.add(schedule)
    return schedule


def _refuse_closed(runtime: Runtime) -> None:
    if runtime.closed:
        raise Closed(
            "this offload runtime is shut down and runs no schedule; create a new"
            " offload.Runtime (or schedule before shutdown)"
        )


def periodic(
    *,
    every: float | None = None,
    cron: str | None = None,
    tz: str | tzinfo | None = None,
    jitter: float = 0.0,
    name: str | None = None,
    overlap: Overlap = "skip",
    lane: LaneName | None = None,
    runtime: Runtime | None = None,
    durable: bool = False,
) -> Callable[[F], F]:
    """Decorate a function of no arguments to run periodically (`every=` seconds or a
    `cron=` expression) on `runtime` (default: the default runtime): it starts when the
    runtime starts (`Runtime.start()`, `async with`, `offload.fastapi.lifespan`), or at
    once if the runtime already has. The function itself is returned unchanged.

    With `durable=True` (a module-level function), each run is a durable task, and
    every process running the schedule fires it once per slot in all: the first to
    write the slot to the store enqueues it. `every=` slots are then the multiples of
    `every` seconds on the wall clock; overlap "skip" (a run still queued or running
    makes the next one join it) or "allow"."""
    if (every is None) == (cron is None):
        raise TypeError("@offload.periodic needs exactly one of every=seconds or cron='...'")
    if not isinstance(durable, bool):
        raise TypeError(f"durable must be a bool, not {type(durable).__name__}")
    if durable and lane is not None:
        raise TypeError("a durable schedule takes no lane=: its runs go to the durable store")
    if durable and overlap == "queue":
        raise ValueError(
            "a durable schedule takes overlap='skip' or 'allow': its runs wait in the store"
        )
    make_timing: Callable[[], _Timing]
    if every is not None:
        if tz is not None:
            raise TypeError(
                "tz= is for cron= schedules; an every= schedule has no time zone: pass tz"
                " only with cron="
            )
        period, spread = _seconds("every", every, zero_ok=False), _jitter(jitter)
        if durable and spread:
            raise TypeError("jitter= is not for a durable schedule: its slots are shared")

        def make_timing() -> _Timing:
            return _WallEvery(period) if durable else _Every(period, spread)
    else:
        if jitter:
            raise TypeError(
                "jitter= is for every= schedules; a cron= one runs on its minute: pass jitter"
                " only with every="
            )
        zone = _zone(tz)
        _Cron(cron, zone)  # refuse a bad expression now

        def make_timing() -> _Timing:
            return _Cron(cron, zone)

    checked_overlap = _overlap(overlap)
    _lane(lane)
    if name is not None:
        _name(name, None)
    if runtime is not None:
        _runtime(runtime)

    def decorate(fn: F) -> F:
        _target(fn, lane, (), {})
        if durable:
            if "<" in getattr(fn, "__qualname__", "<"):  # (it imports back: checked per run)
                raise TypeError(
                    "a durable schedule's function must be defined at module level (its"
                    " runs name it by import path), not a lambda, closure or local function"
                )
            from .durable import _registry

            _registry.declare(_name(name, fn))
        registration = _Registration(
            make_timing,
            fn,
            name=_name(name, fn),
            overlap=checked_overlap,
            lane=lane,
            durable=durable,
        )
        _register(registration, runtime)
        return fn

    return decorate


def _register(registration: _Registration, runtime: Runtime | None) -> None:
    from . import default_runtime

    if runtime is None:
        with _for_default_lock:
            _for_default_runtime.append(registration)
        target = default_runtime()
    else:
        runtime._periodic.register(registration)
        target = runtime
    if target.started and not target.closed:
        for todo in target._periodic.claim([registration]):
            todo.start_on(target)
