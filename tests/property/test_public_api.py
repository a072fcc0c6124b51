"""A property-based search of the public API (issue 10): Hypothesis draws a runtime's
options (valid, or inf/nan/huge/0/negative/wrong types), several actors (the main
event loop, plain threads, threads running their own loops, asyncio and uvloop) and
their random operations (spawn on each lane, run, call, cancel, await, result(timeout),
add/remove_done_callback, drain, configure, options, bad input), with targets that
return, raise, nap, cancel themselves, raise from __repr__/__str__/__del__, or can't
cross back from a worker process. After each example it checks:

* bad input raised a clean TypeError/ValueError at the call site (never anything else);
* every task ended, exactly once (a done-callback on each ran once);
* every failure was delivered to a caller or reported to error_handler, and reported
  at most once;
* the stats identity held on every lane (submitted = terminal counters + in flight);
* shutdown returned within its timeout (plus a generous margin for a noisy machine);
* no fd, thread or child-process growth once the runtime is shut down;
* nothing unexpected reached sys.unraisablehook or threading.excepthook.

Bounded by wall time: OFFLOAD_PROPERTY_SECONDS (default 20; `make test-property` runs
it for longer). The number of examples is printed.
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import property_targets as targets
import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from waiting import run_to_completion

import offload

BUDGET = float(os.environ.get("OFFLOAD_PROPERTY_SECONDS", "20"))
#: Examples per Hypothesis run; runs repeat (with fresh randomness) until the budget ends.
BATCH = int(os.environ.get("OFFLOAD_PROPERTY_BATCH", "25"))

#: Inputs excluded from the search (item of issue 10 -> what), each still drawn by the
#: strategies and counted when skipped. Empty: every input once excluded is fixed.
KNOWN_UNTIL_MERGE: dict[int, str] = {}
#: Generous bound on "does not hang" beyond a requested timeout (shared 2-core machine).
MARGIN = 20.0
WAIT = 10.0
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
NAN, INF = math.nan, math.inf

# --- strategies -------------------------------------------------------------------------------

WEIRD_COUNTS = [0, -1, 2**31, 2**63, 2**70, True, 1.5, "2", NAN]
WEIRD_SECONDS = [-1, -0.0, NAN, INF, 1e19, 10**30, True, "1", [1]]


def mostly(usual: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`usual` nine draws in ten, else `rare` (st.one_of would merge repeated branches)."""
    return st.integers(0, 9).flatmap(lambda n: rare if n == 0 else usual)


def sane_or_weird(sane: st.SearchStrategy[Any], weird: list[Any]) -> st.SearchStrategy[Any]:
    """Mostly a sane value; one draw in ten a bad or extreme one."""
    return mostly(sane, st.sampled_from(weird))


counts = st.sampled_from([None, 0, 1, 2, 5, 100])
lane_limits = st.fixed_dictionaries(
    {},
    optional={
        "max_pending": sane_or_weird(counts, WEIRD_COUNTS),
        "max_running": sane_or_weird(st.sampled_from([None, 1, 2, 8]), WEIRD_COUNTS),
        "on_full": sane_or_weird(st.sampled_from(["reject", "drop", "block"]), ["queue", None]),
    },
)
options_strategy = st.fixed_dictionaries(
    {},
    optional={
        "threads": sane_or_weird(st.integers(1, 4), WEIRD_COUNTS),
        "min_threads": sane_or_weird(st.integers(0, 2), WEIRD_COUNTS),
        "idle_timeout": sane_or_weird(st.sampled_from([0, 0.01, 0.2, 30]), WEIRD_SECONDS),
        "background_loops": sane_or_weird(st.integers(1, 2), WEIRD_COUNTS),
        "processes": st.just(1),
        "max_pending": sane_or_weird(counts, WEIRD_COUNTS),
        "max_running": sane_or_weird(st.sampled_from([None, 1, 2, 8]), WEIRD_COUNTS),
        "on_full": sane_or_weird(st.sampled_from(["reject", "drop", "block"]), ["queue", 1]),
        "shutdown_timeout": sane_or_weird(st.sampled_from([0, 0.5, 2]), WEIRD_SECONDS),
        "lanes": st.one_of(
            st.none(),
            mostly(
                st.dictionaries(
                    st.sampled_from(["loop", "background", "threads", "processes"]), lane_limits
                ),
                st.sampled_from([{"nope": {}}, {"threads": 3}, []]),
            ),
        ),
        "loop_factory": st.sampled_from([None, asyncio.new_event_loop, uvloop.new_event_loop]),
    },
)
#: One option set in ten also has an unknown option.
options_strategy = mostly(
    options_strategy, options_strategy.map(lambda o: {**o, "unknown_option": 1})
)

LANES = ["loop", "background", "threads", "processes", None]
values = st.integers(0, 9)
timeouts = sane_or_weird(st.sampled_from([None, 0, 0.05, 0.5]), [NAN, -1, INF, "1", 10**30])
NAMES = st.sampled_from([None, "job", "", "ünï", 42, "repr-raises"])
CALLBACKS = st.sampled_from(["plain", "raises", "eq_raises"])


@st.composite
def spawn_op(draw: st.DrawFn) -> tuple[Any, ...]:
    lane = draw(st.sampled_from(LANES))
    if lane == "processes" and draw(st.integers(0, 3)):
        lane = "threads"  # keep the (slow) processes lane to about 1 spawn in 4 of its draws
    kinds = {
        "loop": list(targets.ASYNC),
        "background": list(targets.ASYNC),
        "threads": list(targets.SYNC),
        "processes": [*targets.SYNC, *targets.PROCESS_ONLY],
        None: [*targets.SYNC, *targets.ASYNC],
    }[lane]
    behaviour = draw(st.sampled_from([*kinds, "bad_target"]))
    return ("spawn", lane, behaviour, draw(values), draw(NAMES), draw(st.booleans()))


def ops_for(kind: str) -> st.SearchStrategy[tuple[Any, ...]]:
    common: list[st.SearchStrategy[tuple[Any, ...]]] = [
        spawn_op(),
        spawn_op(),
        spawn_op(),
        st.tuples(st.just("cancel"), st.integers(0, 50)),
        st.tuples(st.just("add_cb"), st.integers(0, 50), CALLBACKS),
        st.tuples(st.just("remove_cb"), st.integers(0, 50), CALLBACKS),
        st.tuples(st.just("stats")),
        st.tuples(st.just("configure"), options_strategy),
    ]
    if kind == "async":
        common += [
            st.tuples(st.just("await"), st.integers(0, 50)),
            st.tuples(st.just("run"), st.sampled_from(["background", "threads"]), values),
            st.tuples(st.just("drain"), timeouts),
            st.tuples(st.just("sleep"), st.sampled_from([0, 0.01, 0.05])),
        ]
    else:
        common += [
            st.tuples(st.just("result"), st.integers(0, 50), timeouts),
            st.tuples(st.just("exception"), st.integers(0, 50), timeouts),
            st.tuples(st.just("call"), st.sampled_from(sorted(targets.ASYNC)), values, timeouts),
            st.tuples(st.just("sleep"), st.sampled_from([0, 0.01, 0.05])),
        ]
    return st.one_of(common)


@dataclass
class Scenario:
    options: dict[str, Any]
    main_loop: str
    home: bool
    main_ops: list[tuple[Any, ...]]
    thread_ops: list[list[tuple[Any, ...]]]
    loop_threads: list[tuple[str, list[tuple[Any, ...]]]]
    shutdown_timeout: Any
    shutdown_from: str
    uninitialised_subclass: bool


scenarios = st.builds(
    Scenario,
    options=options_strategy,
    main_loop=st.sampled_from(sorted(LOOPS)),
    home=st.booleans(),
    main_ops=st.lists(ops_for("async"), max_size=12),
    thread_ops=st.lists(st.lists(ops_for("sync"), max_size=10), max_size=2),
    loop_threads=st.lists(
        st.tuples(st.sampled_from(sorted(LOOPS)), st.lists(ops_for("async"), max_size=8)),
        max_size=1,
    ),
    shutdown_timeout=sane_or_weird(st.sampled_from([0, 0.5, 2, None]), [NAN, -1, INF, "x"]),
    shutdown_from=st.sampled_from(["loop", "thread", "inside a task"]),
    uninitialised_subclass=st.booleans(),
)

# --- the bookkeeping of one example -----------------------------------------------------------


class CallbackEq:
    """A done-callback whose __eq__ raises (reached by remove_done_callback)."""

    def __call__(self, task: Any) -> None:
        pass

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("CallbackEq.__eq__ raised")

    __hash__ = object.__hash__


class ReprRaises:
    def __repr__(self) -> str:
        raise RuntimeError("ReprRaises.__repr__ raised")


def plain_callback(task: Any) -> None:
    pass


def raising_callback(task: Any) -> None:
    raise targets.Boom("done-callback raised")


@dataclass
class Book:
    """What one example did, shared by its actors."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    tasks: list[Any] = field(default_factory=list)
    ended: Counter[int] = field(default_factory=Counter)
    reported: Counter[int] = field(default_factory=Counter)
    delivered: set[int] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    skipped: Counter[int] = field(default_factory=Counter)

    def add(self, task: Any) -> None:
        with self.lock:
            self.tasks.append(task)
        task.add_done_callback(self.on_done)

    def on_done(self, task: Any) -> None:
        with self.lock:
            self.ended[task.id] += 1

    def on_failure(self, task: Any, exc: BaseException) -> None:
        with self.lock:
            self.reported[task.id] += 1

    def pick(self, index: int) -> Any:
        with self.lock:
            return self.tasks[index % len(self.tasks)] if self.tasks else None

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)


def is_bad_timeout(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return True
    return math.isnan(value) or value < 0


def known(book: Book, item: int) -> bool:
    """True (and counted) when this input is one KNOWN_UNTIL_MERGE still excludes."""
    if item in KNOWN_UNTIL_MERGE:
        book.skipped[item] += 1
        return True
    return False


def options_are_known_bad(book: Book, options: dict[str, Any]) -> bool:
    idle = options.get("idle_timeout")
    if isinstance(idle, (int, float)) and not isinstance(idle, bool):
        try:
            if float(idle) > 1e9 and known(book, 3):
                return True
        except OverflowError:
            return known(book, 3)
    return False


CLEAN = (TypeError, ValueError)
#: Errors a valid operation may meet at its call site, by design.
BY_DESIGN = (offload.Full, offload.Closed)


def spawn(rt: offload.Runtime, book: Book, op: tuple[Any, ...]) -> Any:
    _, lane, behaviour, value, name, _ = op
    if name == "repr-raises":
        if known(book, 12):
            name = "job"
        else:
            name = ReprRaises()
    bad_name = name is not None and not isinstance(name, str)
    if behaviour == "bad_target":
        target: Any = 42
    elif behaviour in targets.PROCESS_ONLY:
        target = targets.PROCESS_ONLY[behaviour]
    elif lane in ("loop", "background"):
        target = targets.ASYNC[behaviour]
    elif lane is None:
        target = targets.ASYNC.get(behaviour) or targets.SYNC[behaviour]
    else:
        target = targets.SYNC[behaviour]
    try:
        where = rt.options(name=name, lane=lane)
    except CLEAN:
        if not bad_name:
            book.problem(f"options(name={name!r}, lane={lane!r}) refused a valid name")
        return None
    if bad_name:
        book.problem(f"options(name=<{type(name).__name__}>) accepted a non-str name")
    try:
        task = where.spawn(target, value)
    except BY_DESIGN:
        return None
    except CLEAN as exc:
        if behaviour != "bad_target":
            book.problem(f"spawn({behaviour} on {lane}) raised {type(exc).__name__}: {exc}")
        return None
    except BaseException as exc:  # noqa: BLE001 (anything else is a finding)
        book.problem(f"spawn({behaviour} on {lane}) raised {type(exc).__name__} (not clean)")
        return None
    if behaviour == "bad_target":
        book.problem(f"spawn(42) on {lane} was accepted")
    book.add(task)
    return task


def outcome_check(book: Book, task: Any, exc: BaseException, what: str) -> None:
    """An exception from await/result/exception/call: the task's own outcome, or a
    clean refusal of the arguments, or a timeout."""
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)) and not task.done():
        return
    if isinstance(exc, asyncio.CancelledError):
        return
    failures = (*targets.EXPECTED_FAILURES, offload.ProcessDied, targets.DelError)
    if isinstance(exc, failures) and task.state == "failed":
        with book.lock:
            book.delivered.add(task.id)
        return
    book.problem(f"{what} raised {type(exc).__name__} for task {task.id}")


def callbacks(book: Book, task: Any, kind: str, remove: bool) -> None:
    fn: Any = {"plain": plain_callback, "raises": raising_callback}.get(kind)
    if kind == "eq_raises":
        if remove and known(book, 1):
            return
        fn = CallbackEq()
    try:
        if remove:
            task.remove_done_callback(fn)
        else:
            task.add_done_callback(fn)
    except RuntimeError as exc:
        if "__eq__" not in str(exc):
            book.problem(f"done-callback op raised {exc!r}")
    except BaseException as exc:  # noqa: BLE001 (anything else is a finding)
        book.problem(f"done-callback op raised {type(exc).__name__}: {exc!r}")


def configure(rt: offload.Runtime, book: Book, options: dict[str, Any]) -> None:
    if options_are_known_bad(book, options):
        return
    options = {k: v for k, v in options.items() if k != "processes"}
    try:
        rt.configure(**options, error_handler=book.on_failure)
    except (RuntimeError, *CLEAN):
        pass
    except BaseException as exc:  # noqa: BLE001 (anything else is a finding)
        book.problem(f"configure raised {type(exc).__name__}: {exc!r}")


def common_op(rt: offload.Runtime, book: Book, op: tuple[Any, ...]) -> bool:
    """The operations both kinds of actor do alike; False if `op` is not one."""
    kind = op[0]
    if kind == "spawn":
        spawn(rt, book, op)
    elif kind == "cancel":
        task = book.pick(op[1])
        if task is not None:
            task.cancel()
    elif kind in ("add_cb", "remove_cb"):
        task = book.pick(op[1])
        if task is not None:
            callbacks(book, task, op[2], remove=kind == "remove_cb")
    elif kind == "stats":
        check_stats(book, rt.stats(), final=False)
    elif kind == "configure":
        configure(rt, book, op[1])
    else:
        return False
    return True


async def async_actor(rt: offload.Runtime, book: Book, ops: list[tuple[Any, ...]]) -> None:
    for op in ops:
        kind = op[0]
        if common_op(rt, book, op):
            continue
        if kind == "await":
            task = book.pick(op[1])
            if task is None:
                continue
            try:
                await asyncio.wait_for(asyncio.shield(task._done_future()), 1.0)
                await task
            except asyncio.TimeoutError:
                pass
            except BaseException as exc:  # noqa: BLE001 (anything else is a finding)
                outcome_check(book, task, exc, "await")
        elif kind == "run":
            lane = getattr(rt, op[1])
            target = targets.anap if op[1] == "background" else targets.nap
            task = None
            try:
                task = lane.run(target, op[2])
                await task
            except BY_DESIGN:
                pass
            except asyncio.CancelledError:
                # by design when the task itself ended cancelled: dropped by a full lane
                # (on_full="drop"), cancelled by another actor or by a shutdown
                if task is None or not task.cancelled():
                    book.problem(f"await {op[1]}.run raised CancelledError (task not cancelled)")
            except BaseException as exc:  # noqa: BLE001 (anything else is a finding)
                book.problem(f"await {op[1]}.run raised {type(exc).__name__}")
        elif kind == "drain":
            try:
                await asyncio.wait_for(rt.drain(op[1]), WAIT + 1.0)
            except CLEAN:
                if not is_bad_timeout(op[1]):
                    book.problem(f"drain({op[1]!r}) refused a valid timeout")
            except asyncio.TimeoutError:
                if op[1] is not None:  # drain(None) waits for naps only: bounded too
                    book.problem(f"drain({op[1]!r}) did not return")
                else:
                    book.problem("drain(None) did not return within 11 s")
            else:
                if is_bad_timeout(op[1]):
                    book.problem(f"drain({op[1]!r}) accepted a bad timeout")
        elif kind == "sleep":
            await asyncio.sleep(op[1])


def sync_actor(rt: offload.Runtime, book: Book, ops: list[tuple[Any, ...]]) -> None:
    for op in ops:
        kind = op[0]
        if common_op(rt, book, op):
            continue
        if kind in ("result", "exception"):
            task = book.pick(op[1])
            if task is None:
                continue
            timeout = op[2]
            if timeout is None or (isinstance(timeout, float) and math.isinf(timeout)):
                timeout = 1.0  # an actor never waits unbounded on a task that may hang
            if isinstance(timeout, float) and math.isnan(timeout) and known(book, 15):
                continue
            try:
                got = getattr(task, kind)(timeout)
            except BaseException as exc:  # noqa: BLE001 (anything else is a finding)
                if not is_bad_timeout(timeout):
                    outcome_check(book, task, exc, kind)  # its failure may be a TypeError too
                elif not isinstance(exc, CLEAN):
                    book.problem(f"{kind}({timeout!r}) raised {type(exc).__name__}, not clean")
            else:
                if is_bad_timeout(timeout):
                    book.problem(f"{kind}({timeout!r}) accepted a bad timeout")
                if kind == "exception" and got is not None:
                    with book.lock:
                        book.delivered.add(task.id)
        elif kind == "call":
            _, behaviour, value, timeout = op
            if timeout is None:
                timeout = 2.0
            try:
                rt.call(targets.ASYNC[behaviour], value, timeout=timeout)
            except CLEAN:
                if not is_bad_timeout(timeout):
                    book.problem(f"call(timeout={timeout!r}) refused a valid timeout")
            except BY_DESIGN:
                pass
            except (TimeoutError, asyncio.CancelledError, *targets.EXPECTED_FAILURES):
                pass  # delivered: call's task is not in the book (it is observed)
            except BaseException as exc:  # noqa: BLE001 (anything else is a finding)
                book.problem(f"call({behaviour}) raised {type(exc).__name__}")
        elif kind == "sleep":
            time.sleep(op[1])


def loop_thread_actor(rt: offload.Runtime, book: Book, kind: str, ops: list[Any]) -> None:
    run_to_completion(LOOPS[kind](), async_actor(rt, book, ops))


# --- invariants ----------------------------------------------------------------------------


def check_stats(book: Book, stats: dict[str, Any], final: bool) -> None:
    for lane, s in stats.items():
        if not isinstance(s, dict) or "submitted" not in s:
            continue
        terminal = sum(
            int(s[k]) for k in ("succeeded", "failed", "cancelled", "dropped", "rejected")
        )
        in_flight = int(s["pending"]) + int(s["running"])
        if int(s["submitted"]) != terminal + in_flight:
            book.problem(f"stats of {lane} don't add up: {s}")
        if final and in_flight:
            book.problem(f"stats of {lane} after shutdown: {in_flight} still in flight")


def resources() -> tuple[int, int, int]:
    """Open fds, OS threads, child processes of this process (while item 11 is known,
    eventfds are left out of the fds: STATS counts how many were left behind)."""
    fds = open_fds().values()
    kept = [fd for fd in fds if not (11 in KNOWN_UNTIL_MERGE and "eventfd" in fd)]
    threads = len(os.listdir("/proc/self/task"))
    return len(kept), threads, len(descendants(os.getpid()))


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (workers are children of the forkserver, not ours)."""
    found = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                children = [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
        for child in children:
            found += [child, *descendants(child)]
    return found


def eventfds() -> int:
    return sum("eventfd" in fd for fd in open_fds().values())


def open_fds() -> dict[int, str]:
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            out[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
    return out


def settle(baseline: tuple[int, int, int], timeout: float = WAIT) -> tuple[int, int, int]:
    deadline = time.monotonic() + timeout
    while True:
        gc.collect()
        now = resources()
        if all(n <= b for n, b in zip(now, baseline)) or time.monotonic() > deadline:
            return now
        time.sleep(0.05)


# --- one example ----------------------------------------------------------------------------

STATS = Counter[str]()
DEADLINE = [math.inf]
#: What reached sys.unraisablehook / threading.excepthook during the test (a DelRaiser's
#: own DelError is Python's doing, by design: not counted).
UNRAISABLE: list[str] = []
THREAD_ERRORS: list[str] = []


def on_unraisable(args: Any) -> None:
    if not isinstance(args.exc_value, targets.DelError):
        UNRAISABLE.append(f"{type(args.exc_value).__name__}: {args.exc_value!r} {args.err_msg}")


def on_thread_error(args: Any) -> None:
    THREAD_ERRORS.append(f"{type(args.exc_value).__name__}: {args.exc_value!r} in {args.thread}")


def run_example(scenario: Scenario) -> None:
    if time.monotonic() > DEADLINE[0]:
        return  # the budget is spent: let Hypothesis finish its batch quickly
    STATS["examples"] += 1
    book = Book()
    first_unraisable, first_thread_error = len(UNRAISABLE), len(THREAD_ERRORS)
    baseline = settle(resources(), timeout=1.0)
    eventfds_before = eventfds()
    run_scenario(scenario, book)
    gc.collect()
    for item, n in book.skipped.items():
        STATS[f"skipped item {item}"] += n
    assert not book.problems, "\n".join(book.problems)
    assert UNRAISABLE[first_unraisable:] == [], UNRAISABLE[first_unraisable:]
    assert THREAD_ERRORS[first_thread_error:] == [], THREAD_ERRORS[first_thread_error:]
    after = settle(baseline)
    STATS["eventfds left behind (item 11)"] += max(0, eventfds() - eventfds_before)
    assert all(n <= b for n, b in zip(after, baseline)), (
        f"(fds, threads, children) grew from {baseline} to {after} after shutdown;"
        f" fds: {open_fds()}"
    )


class Uninitialised(offload.Runtime):
    def __init__(self) -> None:  # no super().__init__(): an engine never set up
        pass


def use_uninitialised(book: Book) -> None:
    """Every entry point of a Runtime whose engine was never initialised must raise a
    clear RuntimeError."""
    rt = Uninitialised()
    for name, call in (
        ("spawn", lambda: rt.spawn(targets.ret, 1)),
        ("background.spawn", lambda: rt.background.spawn(targets.aret, 1)),
        ("threads.spawn", lambda: rt.threads.spawn(targets.ret, 1)),
        ("stats", rt.stats),
        ("close", lambda: rt.close(1)),
    ):
        try:
            call()
        except (RuntimeError, AttributeError, TypeError):
            pass
        except BaseException as exc:  # noqa: BLE001 (anything else is a finding)
            book.problem(f"uninitialised Runtime: {name} raised {type(exc).__name__}")
        else:
            book.problem(f"uninitialised Runtime: {name} was accepted")


def run_scenario(scenario: Scenario, book: Book) -> None:
    if scenario.uninitialised_subclass and not known(book, 2):
        use_uninitialised(book)
    if options_are_known_bad(book, scenario.options):
        return
    options = {**scenario.options, "error_handler": book.on_failure}
    options.setdefault("processes", 1)
    try:
        rt = offload.Runtime(**options)
    except CLEAN:
        STATS["refused options"] += 1
        return
    except BaseException as exc:
        raise AssertionError(f"Runtime({scenario.options!r}) raised {exc!r}, not clean") from exc
    STATS["runtimes"] += 1
    unfinished: Any = set()
    shutdown_timeout = scenario.shutdown_timeout
    bad_shutdown = is_bad_timeout(shutdown_timeout)

    async def main() -> None:
        nonlocal unfinished
        if scenario.home:
            rt.start()
        actors = [
            threading.Thread(target=sync_actor, args=(rt, book, ops), daemon=True)
            for ops in scenario.thread_ops
        ] + [
            threading.Thread(target=loop_thread_actor, args=(rt, book, kind, ops), daemon=True)
            for kind, ops in scenario.loop_threads
        ]
        for actor in actors:
            actor.start()
        await async_actor(rt, book, scenario.main_ops)
        for actor in actors:
            await asyncio.to_thread(actor.join, WAIT * 3)
            if actor.is_alive():
                book.problem("an actor thread hung")
        if scenario.shutdown_from == "loop":
            unfinished = await timed_shutdown(rt.shutdown, shutdown_timeout, book)
        elif scenario.shutdown_from == "inside a task":
            unfinished = await shutdown_inside_a_task(rt, shutdown_timeout, book)

    run_to_completion(LOOPS[scenario.main_loop](), main())
    if scenario.shutdown_from == "thread" or bad_shutdown:
        unfinished = run_in_thread(
            lambda: timed_close(rt, None if bad_shutdown else shutdown_timeout, book)
        )
    final_checks(rt, book, unfinished)


async def timed_shutdown(shutdown: Any, timeout: Any, book: Book) -> Any:
    started = time.monotonic()
    try:
        result = await shutdown(timeout)
    except CLEAN:
        if not is_bad_timeout(timeout):
            book.problem(f"shutdown({timeout!r}) refused a valid timeout")
        return set()
    if is_bad_timeout(timeout):
        book.problem(f"shutdown({timeout!r}) accepted a bad timeout")
    bound_check(book, "shutdown", timeout, time.monotonic() - started)
    return result


async def shutdown_inside_a_task(rt: offload.Runtime, timeout: Any, book: Book) -> Any:
    """`await rt.shutdown()` from an offload task on this loop: it must leave itself out
    (not wait for itself, not cancel itself) and complete."""

    async def shut_down() -> Any:
        return await timed_shutdown(rt.shutdown, timeout, book)

    dropped_before = rt.loop.stats()["dropped"]
    try:
        task = rt.loop.spawn(shut_down)
    except BY_DESIGN:
        return set()
    if rt.loop.stats()["dropped"] > dropped_before and task.cancelled():
        # a full loop lane with on_full="drop" dropped it, by design: shut down from here
        return await timed_shutdown(rt.shutdown, timeout, book)
    limit = timeout if isinstance(timeout, (int, float)) and math.isfinite(timeout) else WAIT
    try:
        return await asyncio.wait_for(task, limit + MARGIN)
    except asyncio.TimeoutError:
        book.problem(f"shutdown({timeout!r}) inside a task did not return")
    except BaseException as exc:  # noqa: BLE001 (anything else is a finding)
        book.problem(f"shutdown({timeout!r}) inside a task raised {type(exc).__name__}: {exc}")
    return set()


def timed_close(rt: offload.Runtime, timeout: Any, book: Book) -> Any:
    started = time.monotonic()
    result = rt.close(timeout) if not rt.closed else set()
    bound_check(book, "close", timeout, time.monotonic() - started)
    return result


def bound_check(book: Book, what: str, timeout: Any, took: float) -> None:
    limit = timeout if isinstance(timeout, (int, float)) and math.isfinite(timeout) else WAIT
    if took > limit + MARGIN:
        book.problem(f"{what}({timeout!r}) took {took:.1f} s")


def run_in_thread(fn: Any) -> Any:
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(fn()), daemon=True)
    thread.start()
    thread.join(WAIT * 3 + MARGIN)
    assert not thread.is_alive(), "close() hung"
    return box[0] if box else set()


def final_checks(rt: offload.Runtime, book: Book, unfinished: Any) -> None:
    if not rt.closed:
        run_in_thread(lambda: timed_close(rt, 2, book))
    for task in list(book.tasks):
        if not task.done() and not task._wait(WAIT):
            book.problem(f"task {task.id} ({task.state}) never ended after shutdown")
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and sum(book.ended.values()) < len(book.tasks):
        time.sleep(0.01)
    for task in book.tasks:
        n = book.ended[task.id]
        if n != 1:
            book.problem(f"task {task.id} ({task.lane}, {task.state}) ended {n} times")
        reports = book.reported[task.id]
        if reports > 1:
            book.problem(f"task {task.id}'s failure was reported {reports} times")
        if task.state == "failed" and reports == 0 and task.id not in book.delivered:
            book.problem(f"task {task.id} ({task.lane}) failed and nobody heard of it")
        STATS[f"{task.lane} {task.state}"] += 1
    check_stats(book, rt.stats(), final=True)


# --- the test -----------------------------------------------------------------------------------


@settings(
    max_examples=BATCH,
    deadline=None,
    database=None,
    derandomize=False,
    print_blob=True,
    suppress_health_check=list(HealthCheck),
)
@given(scenarios)
def _batch(scenario: Scenario) -> None:
    run_example(scenario)


@pytest.mark.timeout(BUDGET + 600)
def test_public_api_properties(capsys: pytest.CaptureFixture[str]) -> None:
    """Random use of the public API keeps every invariant, for OFFLOAD_PROPERTY_SECONDS."""
    # The forkserver and resource tracker are started once per interpreter, not per
    # runtime: start them before any baseline of child processes is taken.
    # So are uvloop's (libuv's) signal pipe, made on a first loop in a thread.
    with offload.Runtime(processes=1) as rt:
        assert rt.processes.spawn(targets.ret, 1).result(60) == 1
    for kind, factory in LOOPS.items():
        warm = threading.Thread(target=loop_thread_actor, args=(None, Book(), kind, []))
        warm.start()
        warm.join()
        run_to_completion(factory(), asyncio.sleep(0))
    STATS.clear()
    started = time.monotonic()
    DEADLINE[0] = started + BUDGET
    batches = 0
    old_hooks = sys.unraisablehook, threading.excepthook
    sys.unraisablehook, threading.excepthook = on_unraisable, on_thread_error
    targets.ARMED[0] = True
    try:
        while batches == 0 or time.monotonic() - started < BUDGET:
            _batch()
            batches += 1
    finally:
        targets.ARMED[0] = False
        gc.collect()
        sys.unraisablehook, threading.excepthook = old_hooks
    took = time.monotonic() - started
    with capsys.disabled():
        print(
            f"\nproperty test: {STATS['examples']} examples in {batches} batches, {took:.0f} s;"
            f" {dict(sorted(STATS.items()))}"
        )
