"""Bad input catalogue (issue 5): every public call with wrong types, wrong values and
in the wrong state (after shutdown, before start, from the wrong thread).

Each case asserts the exact exception type, that the message says what went wrong
(a regex), and that it says what to do about it (see `says_what_to_do`). The error must
come from the call itself, never later from a worker. docs/reliability.md lists them.

Cases that currently fail because of an engine bug are marked xfail(strict=True) with the
bug; they turn into failures once it is fixed, as a reminder to drop the mark.
"""

from __future__ import annotations

import asyncio
import datetime
import math
import re
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import offload

# --- targets -----------------------------------------------------------------------------


def sync_fn(*args: Any) -> int:
    return 1


async def async_fn() -> int:
    return 1


async def async_gen_fn() -> Any:
    yield 1


class AsyncCallable:
    async def __call__(self) -> int:
        return 1


def fresh_coro() -> Any:
    return async_fn()


# --- the environment a case runs in ------------------------------------------------------


class Env:
    """Makes runtimes and tasks for a case and cleans them up afterwards."""

    def __init__(self) -> None:
        self.runtimes: list[offload.Runtime] = []
        self.gates: list[threading.Event] = []
        self.coros: list[Any] = []

    def rt(self, **options: Any) -> offload.Runtime:
        rt = offload.Runtime(**options)
        self.runtimes.append(rt)
        return rt

    def closed(self) -> offload.Runtime:
        rt = self.rt()
        rt.spawn(sync_fn).result(timeout=10)
        rt.close(5)
        return rt

    def coro(self) -> Any:
        c = async_fn()
        self.coros.append(c)
        return c

    def done_task(self) -> offload.Task[Any]:
        task = self.rt().threads.spawn(sync_fn)
        task.result(timeout=10)
        return task

    def running_task(self) -> offload.Task[Any]:
        gate = threading.Event()
        self.gates.append(gate)
        return self.rt().threads.spawn(gate.wait, 30)

    def full_lane_rt(self, lane: str, on_full: str) -> offload.Runtime:
        """A runtime whose `lane` has one task running, none waiting allowed."""
        rt = self.rt(lanes={lane: {"max_running": 1, "max_pending": 0, "on_full": on_full}})
        if lane == "threads":
            gate = threading.Event()
            self.gates.append(gate)
            rt.threads.spawn(gate.wait, 30)
        else:
            rt.background.spawn(asyncio.sleep, 30)
        return rt

    def close(self) -> None:
        for gate in self.gates:
            gate.set()
        for c in self.coros:
            c.close()
        for rt in self.runtimes:
            if not rt.closed:
                rt.close(2)


def on_loop(fn: Callable[[], Any]) -> Any:
    """Call fn on a running event loop's thread (in asyncio.run)."""

    async def main() -> Any:
        return fn()

    return asyncio.run(main())


def awaited(make: Callable[[], Any]) -> Any:
    """Await what make() returns, on a fresh loop."""

    async def main() -> Any:
        return await make()

    return asyncio.run(main())


def in_thread(fn: Callable[[], Any]) -> Any:
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(("ok", fn()))
        except BaseException as exc:  # noqa: BLE001
            box.append(("err", exc))

    t = threading.Thread(target=run)
    t.start()
    t.join(30)
    kind, value = box[0]
    if kind == "err":
        raise value
    return value


#: Words of a message that tells the user what to do (or what is expected instead).
REMEDY = re.compile(
    r"\b(use|pass|send|call|create|raise|retry|spawn|await\w*|install|must|instead|only|needs?|missing|"
    r"known options|per-lane options|lanes are|takes keyword arguments)\b",
    re.IGNORECASE,
)


def says_what_to_do(message: str) -> bool:
    return bool(REMEDY.search(message))


@dataclass
class Case:
    id: str
    call: Callable[[Env], Any]
    exc: type[BaseException]
    match: str
    bug: str | None = None  # a known engine bug: strict xfail
    python_message: bool = False  # CPython's own wording (e.g. the user's function's signature)


# --- the catalogue ---------------------------------------------------------------------------

MUST_INT = r"must be an int or None, not"
CASES: list[Case] = []


def case(id: str, exc: type[BaseException], match: str, bug: str | None = None) -> Any:
    def register(fn: Callable[[Env], Any]) -> Callable[[Env], Any]:
        CASES.append(Case(id, fn, exc, match, bug))
        return fn

    return register


# Runtime(**options) and configure(**options): wrong types and values
OPTION_CASES: list[tuple[str, dict[str, Any], type[BaseException], str]] = [
    (
        "unknown-option",
        {"thread": 4},
        TypeError,
        r"unknown Runtime option\(s\): thread; known options: threads,",
    ),
    ("threads-str", {"threads": "4"}, TypeError, r"threads " + MUST_INT + " str"),
    ("threads-float", {"threads": 1.5}, TypeError, r"threads " + MUST_INT + " float"),
    ("threads-bool", {"threads": True}, TypeError, r"threads " + MUST_INT + " bool"),
    ("threads-none", {"threads": None}, TypeError, r"threads must be a positive int"),
    ("threads-zero", {"threads": 0}, ValueError, r"threads must be > 0 or None, got 0"),
    ("threads-negative", {"threads": -1}, ValueError, r"threads must be > 0 or None, got -1"),
    ("threads-too-many", {"threads": 5000}, ValueError, r"threads must be in 1\.\.4096"),
    ("min-threads-negative", {"min_threads": -1}, ValueError, r"min_threads must be >= 0"),
    (
        "min-threads-above-threads",
        {"threads": 2, "min_threads": 5},
        ValueError,
        r"min_threads \(5\) must not exceed threads \(2\)",
    ),
    (
        "idle-timeout-negative",
        {"idle_timeout": -1},
        ValueError,
        r"idle_timeout must be >= 0 seconds, got -1",
    ),
    (
        "idle-timeout-str",
        {"idle_timeout": "1"},
        TypeError,
        r"idle_timeout must be a number of seconds, not str",
    ),
    ("background-loops-zero", {"background_loops": 0}, ValueError, r"background_loops must be > 0"),
    (
        "background-loops-str",
        {"background_loops": "2"},
        TypeError,
        r"background_loops " + MUST_INT + " str",
    ),
    (
        "background-loops-too-many",
        {"background_loops": 300},
        ValueError,
        r"background_loops must be in 1\.\.256",
    ),
    (
        "max-pending-negative",
        {"max_pending": -1},
        ValueError,
        r"max_pending must be >= 0 or None, got -1",
    ),
    ("max-pending-float", {"max_pending": 1.5}, TypeError, r"max_pending " + MUST_INT + " float"),
    ("max-running-zero", {"max_running": 0}, ValueError, r"max_running must be > 0 or None, got 0"),
    (
        "max-running-negative",
        {"max_running": -3},
        ValueError,
        r"max_running must be > 0 or None, got -3",
    ),
    (
        "on-full-unknown",
        {"on_full": "wait"},
        ValueError,
        r"on_full must be one of 'reject', 'drop', 'block', got 'wait'",
    ),
    ("on-full-none", {"on_full": None}, ValueError, r"on_full must be one of .* got None"),
    (
        "error-handler-not-callable",
        {"error_handler": 42},
        TypeError,
        r"error_handler must be callable or None, not int",
    ),
    (
        "loop-factory-not-callable",
        {"loop_factory": "uvloop"},
        TypeError,
        r"loop_factory must be callable or None, not str",
    ),
    (
        "shutdown-timeout-negative",
        {"shutdown_timeout": -1},
        ValueError,
        r"shutdown_timeout must be >= 0 seconds",
    ),
    (
        "shutdown-timeout-str",
        {"shutdown_timeout": "10"},
        TypeError,
        r"shutdown_timeout must be a number of seconds, not str",
    ),
    ("processes-zero", {"processes": 0}, ValueError, r"processes must be > 0 or None, got 0"),
    (
        "lanes-list",
        {"lanes": []},
        TypeError,
        r"lanes must be a mapping of lane name to options, not list",
    ),
    (
        "lanes-unknown-lane",
        {"lanes": {"gpu": {}}},
        ValueError,
        r"unknown lane 'gpu' in lanes; lanes are loop, background, threads, processes",
    ),
    (
        "lanes-not-mapping",
        {"lanes": {"threads": 3}},
        TypeError,
        r"lanes\['threads'\] must be a mapping, not int",
    ),
    (
        "lanes-unknown-option",
        {"lanes": {"threads": {"max_workers": 1}}},
        TypeError,
        r"unknown option\(s\) in lanes\['threads'\]: max_workers; per-lane options are",
    ),
    (
        "lanes-negative-pending",
        {"lanes": {"threads": {"max_pending": -1}}},
        ValueError,
        r"lanes\['threads'\]\['max_pending'\] must be >= 0",
    ),
    (
        "lanes-zero-running",
        {"lanes": {"loop": {"max_running": 0}}},
        ValueError,
        r"lanes\['loop'\]\['max_running'\] must be > 0",
    ),
    (
        "lanes-bad-on-full",
        {"lanes": {"background": {"on_full": "queue"}}},
        ValueError,
        r"lanes\['background'\]\['on_full'\] must be one of",
    ),
    # issue 10 item 15: beyond what the engine holds, named (not a bare OverflowError)
    ("max-pending-huge", {"max_pending": 2**70}, ValueError, r"max_pending must be in 0\.\."),
    ("max-running-huge", {"max_running": 2**63}, ValueError, r"max_running must be in 1\.\."),
    ("threads-huge", {"threads": 2**70}, ValueError, r"threads must be in 1\.\.4096"),
    ("processes-huge", {"processes": 2**70}, ValueError, r"processes must be in 1\.\.1024"),
    (
        "lanes-max-pending-huge",
        {"lanes": {"threads": {"max_pending": 2**64}}},
        ValueError,
        r"lanes\['threads'\]\['max_pending'\] must be in 0\.\.",
    ),
    (
        "idle-timeout-nan",
        {"idle_timeout": float("nan")},
        ValueError,
        r"idle_timeout must be a number of seconds >= 0, not nan",
    ),
    (
        "shutdown-timeout-nan",
        {"shutdown_timeout": float("nan")},
        ValueError,
        r"shutdown_timeout must be a number of seconds >= 0, not nan",
    ),
]
for _id, _opts, _exc, _match in OPTION_CASES:
    CASES.append(Case(f"Runtime-{_id}", lambda env, o=_opts: env.rt(**o), _exc, _match))
    CASES.append(
        Case(f"configure-{_id}", lambda env, o=_opts: env.rt().configure(**o), _exc, _match)
    )
CASES.append(
    Case(
        "offload.configure-unknown-option",
        lambda env: offload.configure(threadz=2),
        TypeError,
        r"unknown Runtime option\(s\): threadz; known options:",
    )
)


# spawn/run on every entry point: not a target, coroutine misuse, wrong lane
def entry_points(rt: offload.Runtime) -> dict[str, Callable[..., Any]]:
    return {
        "spawn": rt.spawn,
        "run": rt.run,
        "loop.spawn": rt.loop.spawn,
        "background.spawn": rt.background.spawn,
        "threads.spawn": rt.threads.spawn,
        "threads.run": rt.threads.run,
        "options.spawn": rt.options(name="n").spawn,
    }


for _name in (
    "spawn",
    "run",
    "loop.spawn",
    "background.spawn",
    "threads.spawn",
    "threads.run",
    "options.spawn",
):
    for _label, _target in (("int", 42), ("None", None), ("str", "print")):
        CASES.append(
            Case(
                f"{_name}({_label})",
                lambda env, n=_name, t=_target: entry_points(env.rt())[n](t),
                TypeError,
                r"offload needs a coroutine, an async function or a callable, not \w+",
            )
        )
    CASES.append(
        Case(
            f"{_name}()-no-target",
            lambda env, n=_name: entry_points(env.rt())[n](),
            TypeError,
            r"missing the target to run",
        )
    )
for _name in ("spawn", "run", "loop.spawn", "background.spawn", "options.spawn"):
    CASES.append(
        Case(
            f"{_name}(coroutine, extra-arg)",
            lambda env, n=_name: entry_points(env.rt())[n](env.coro(), 1),
            TypeError,
            r"a coroutine object takes no extra arguments; pass the async function and its arguments instead",
        )
    )
    CASES.append(
        Case(
            f"{_name}(coroutine, extra-kwarg)",
            lambda env, n=_name: entry_points(env.rt())[n](env.coro(), x=1),
            TypeError,
            r"a coroutine object takes no extra arguments",
        )
    )
    CASES.append(
        Case(
            f"{_name}(async-fn, wrong-args)",
            lambda env, n=_name: entry_points(env.rt())[n](async_fn, 1, 2),
            TypeError,
            r"async_fn\(\) takes 0 positional arguments but 2 were given",
            python_message=True,
        )
    )


def _started_coroutine(env: Env) -> Any:
    async def step() -> None:
        await asyncio.sleep(0)

    c = step()
    env.coros.append(c)
    c.send(None)  # now suspended at its first await
    return c


def _finished_coroutine(env: Env) -> Any:
    c = env.coro()
    try:
        c.send(None)
    except StopIteration:
        pass
    return c


@case("spawn(started-coroutine)", ValueError, r"has already started; pass a new coroutine object")
def _(env: Env) -> Any:
    return env.rt().loop.spawn(_started_coroutine(env))


@case("spawn(finished-coroutine)", ValueError, r"has already finished; pass a new coroutine object")
def _(env: Env) -> Any:
    return env.rt().background.spawn(_finished_coroutine(env))


@case(
    "spawn(same-coroutine-twice)",
    ValueError,
    r"already",
)
def _(env: Env) -> Any:
    rt = env.rt()
    c = async_fn()
    rt.background.spawn(c)
    return rt.background.spawn(c)


for _lane in ("loop", "background"):
    CASES.append(
        Case(
            f"{_lane}.spawn(sync-callable)",
            lambda env, l=_lane: getattr(env.rt(), l).spawn(sync_fn),
            TypeError,
            rf"offload\.{_lane} runs coroutines, and .* is a sync callable; send it to offload\.threads",
        )
    )
    CASES.append(
        Case(
            f"{_lane}.run(sync-callable)",
            lambda env, l=_lane: getattr(env.rt(), l).run(sync_fn),
            TypeError,
            rf"offload\.{_lane} runs coroutines",
        )
    )
for _label, _make in (("async-fn", lambda env: async_fn), ("coroutine", lambda env: env.coro())):
    for _name in ("threads.spawn", "threads.run"):
        CASES.append(
            Case(
                f"{_name}({_label})",
                lambda env, n=_name, m=_make: entry_points(env.rt())[n](m(env)),
                TypeError,
                r"offload\.threads runs sync callables, and .* is (an async function|a coroutine); "
                r"send it to offload\.loop or offload\.background",
            )
        )


@case(
    "threads.spawn(object-with-async-__call__)",
    TypeError,
    r"offload\.threads runs sync callables",
)
def _(env: Env) -> Any:
    return env.rt().threads.spawn(AsyncCallable())


@case(
    "spawn(async-generator-function)",
    TypeError,
    r"async generator",
)
def _(env: Env) -> Any:
    return env.rt().spawn(async_gen_fn)


# options(): per-call options
@case("options(name=int)", TypeError, r"name must be a str or None, not int")
def _(env: Env) -> Any:
    return env.rt().options(name=1)


@case(
    "options(lane=unknown)",
    ValueError,
    r"lane must be 'loop', 'background', 'threads', 'processes' or None, not 'gpu'",
)
def _(env: Env) -> Any:
    return env.rt().threads.options(lane="gpu")


@case("options(positional)", TypeError, r"options\(\) takes keyword arguments only: name=, lane=")
def _(env: Env) -> Any:
    return env.rt().options("name")


CASES.append(
    Case(
        "options(unknown-keyword)",
        lambda env: env.rt().options(priority=1),
        TypeError,
        # CPython's wording: 3.10-3.12, then 3.13
        r"'priority' is an invalid keyword argument for options\(\)"
        r"|options\(\) got an unexpected keyword argument 'priority'",
        python_message=True,
    )
)


# options(): task controls (issue 12)
CONTROL_CASES: list[tuple[str, dict[str, Any], type[BaseException], str]] = [
    ("timeout-negative", {"timeout": -1}, ValueError, r"timeout must be > 0, got -1\.0"),
    ("timeout-zero", {"timeout": 0}, ValueError, r"timeout must be > 0, got 0\.0"),
    ("timeout-nan", {"timeout": math.nan}, ValueError, r"timeout must be a finite number"),
    ("timeout-inf", {"timeout": math.inf}, ValueError, r"timeout must be a finite number"),
    ("timeout-str", {"timeout": "5"}, TypeError, r"timeout must be a number of seconds, not str"),
    ("delay-negative", {"delay": -0.5}, ValueError, r"delay must be >= 0, got -0\.5"),
    ("delay-nan", {"delay": math.nan}, ValueError, r"delay must be a finite number"),
    ("delay-inf", {"delay": math.inf}, ValueError, r"delay must be a finite number"),
    ("retries-negative", {"retries": -1}, ValueError, r"retries must be >= 0 .*got -1"),
    ("retries-float", {"retries": 1.5}, TypeError, r"retries must be an int >= 0, not float"),
    ("retries-bool", {"retries": True}, TypeError, r"retries must be an int >= 0, not bool"),
    ("backoff-negative", {"backoff": -1}, ValueError, r"backoff \(a fixed delay\) must be >= 0"),
    ("backoff-str", {"backoff": "fast"}, TypeError, r"backoff \(a fixed delay\) must be a number"),
    (
        "retry-on-int",
        {"retry_on": 3},
        TypeError,
        r"retry_on must be an exception type or a non-empty tuple",
    ),
    (
        "retry-on-empty",
        {"retry_on": ()},
        TypeError,
        r"retry_on must be an exception type or a non-empty tuple",
    ),
    ("retry-on-not-exc", {"retry_on": (str,)}, TypeError, r"retry_on must be an exception type"),
    ("at-naive", {"at": datetime.datetime(2030, 1, 1)}, ValueError, r"at= needs an aware datetime"),
    ("at-str", {"at": "2030-01-01"}, TypeError, r"at= must be a datetime, not str"),
    ("key-int", {"key": 42}, TypeError, r"key must be a str \(e\.g\. 'user:42:refresh'\), not int"),
    ("key-list", {"key": ["a"]}, TypeError, r"key must be a str .*not list"),
    ("key-empty", {"key": ""}, ValueError, r"key must be a non-empty str"),
    (
        "on-duplicate-unknown",
        {"key": "k", "on_duplicate": "ignore"},
        ValueError,
        r"on_duplicate must be 'join', 'reject' or 'replace'",
    ),
    (
        "limit-zero",
        {"limit_key": "t", "limit": 0},
        ValueError,
        r"limit must be in 1\.\.2,147,483,647",
    ),
    ("limit-without-key", {"limit": 2}, ValueError, r"limit= and limit_key= go together"),
    (
        "limit-key-without-limit",
        {"limit_key": "t"},
        ValueError,
        r"limit= and limit_key= go together",
    ),
    ("limit-key-int", {"limit_key": 7, "limit": 1}, TypeError, r"limit_key must be a str"),
]
for _id, _given, _exc, _match in CONTROL_CASES:
    CASES.append(Case(f"options({_id})", lambda env, g=_given: env.rt().options(**g), _exc, _match))
    CASES.append(Case(f"task({_id})", lambda env, g=_given: offload.task(**g), _exc, _match))


@case("Backoff(factor<1)", ValueError, r"Backoff\(factor=\) must be >= 1")
def _(env: Env) -> Any:
    return offload.Backoff(factor=0.5)


@case("Backoff(initial=nan)", ValueError, r"Backoff\(initial=\) must be a finite number")
def _(env: Env) -> Any:
    return offload.Backoff(initial=math.nan)


@case("Retry(delay=-1)", ValueError, r"Retry\(delay=\) must be >= 0")
def _(env: Env) -> Any:
    return offload.Retry(delay=-1)


@case(
    "options(retries).spawn(coroutine-object)",
    ValueError,
    r"retries=2 needs a function to call again for each attempt, not a coroutine object",
)
def _(env: Env) -> Any:
    return env.rt().loop.options(retries=2).spawn(env.coro())


@case("get(task_id=str)", TypeError, r"task_id must be an int \(Task\.id\), not str")
def _(env: Env) -> Any:
    return env.rt().get("7")


@case("tasks(state=unknown)", ValueError, r"state must be one of scheduled, pending")
def _(env: Env) -> Any:
    return env.rt().tasks(state="done")


@case("options(lane=loop).spawn(sync)", TypeError, r"offload\.loop runs coroutines")
def _(env: Env) -> Any:
    return env.rt().threads.options(lane="loop").spawn(sync_fn)


@case("auto-lane.stats()", TypeError, r"stats\(\) of automatic dispatch: use runtime\.stats\(\)")
def _(env: Env) -> Any:
    return env.rt().options(name="x").stats()


# @offload.task
@case("task(non-callable)", TypeError, r"@offload\.task needs a callable, not int")
def _(env: Env) -> Any:
    return offload.task(42)


@case(
    "task(lane=unknown)",
    ValueError,
    r"lane must be one of loop, background, threads, processes or None, got 'gpu'",
)
def _(env: Env) -> Any:
    return offload.task(lane="gpu")


@case("task(name=int)", TypeError, r"name must be a str or None, not int")
def _(env: Env) -> Any:
    return offload.task(name=3)


@case("task(lane=threads)(async-fn).spawn", TypeError, r"offload\.threads runs sync callables")
def _(env: Env) -> Any:
    return offload.task(lane="threads")(async_fn).spawn()


# timeouts
for _name, _call in (
    ("drain", lambda rt, t: awaited(lambda: rt.drain(t))),
    ("shutdown", lambda rt, t: awaited(lambda: rt.shutdown(t))),
    ("drain_sync", lambda rt, t: rt.drain_sync(t)),
    ("close", lambda rt, t: rt.close(t)),
    ("offload.drain", lambda rt, t: awaited(lambda: offload.drain(t))),
):
    CASES.append(
        Case(
            f"{_name}(timeout=-1)",
            lambda env, c=_call: c(env.rt(), -1),
            ValueError,
            r"timeout must be >= 0, got -1",
        )
    )
    CASES.append(
        Case(
            f"{_name}(timeout=str)",
            lambda env, c=_call: c(env.rt(), "5"),
            TypeError,
            r"timeout must be a number of seconds or None, not str",
        )
    )
    CASES.append(
        Case(
            f"{_name}(timeout=nan)",
            lambda env, c=_call: c(env.rt(), float("nan")),
            ValueError,
            r"timeout must be a number of seconds >= 0 or None, not nan",
        )
    )
for _name in ("result", "exception"):
    CASES.append(
        Case(
            f"Task.{_name}(timeout=-1)",
            lambda env, n=_name: getattr(env.done_task(), n)(timeout=-1),
            ValueError,
            r"timeout must be >= 0, got -1",
        )
    )
    CASES.append(
        Case(
            f"Task.{_name}(timeout=bool)",
            lambda env, n=_name: getattr(env.done_task(), n)(True),
            TypeError,
            r"timeout must be a number of seconds or None, not bool",
        )
    )
    CASES.append(
        Case(
            f"Task.{_name}(timeout=str)",
            lambda env, n=_name: getattr(env.done_task(), n)("1"),
            TypeError,
            r"timeout must be a number of seconds or None, not str",
        )
    )


@case(
    "Task.result(timeout)-expires",
    TimeoutError,
    r"task '[\w.]*wait' did not finish within 0\.05 s",
)
def _(env: Env) -> Any:
    return env.running_task().result(timeout=0.05)


# the Task object
@case(
    "Task.add_done_callback(non-callable)",
    TypeError,
    r"add_done_callback\(\) needs a callable, not int",
)
def _(env: Env) -> Any:
    return env.running_task().add_done_callback(42)


@case("Task()", TypeError, r"cannot create 'offload\.Task' instances")
def _(env: Env) -> Any:
    return offload.Task()


@case("Lane()", TypeError, r"cannot create 'offload\.Lane' instances")
def _(env: Env) -> Any:
    return offload.Lane()


# --- wrong state -----------------------------------------------------------------------------

CLOSED = r"the offload runtime is shut down and accepts no new tasks; spawn before shutdown\(\)"
for _name in (
    "spawn",
    "run",
    "loop.spawn",
    "background.spawn",
    "threads.spawn",
    "threads.run",
    "options.spawn",
):
    CASES.append(
        Case(
            f"after-shutdown:{_name}",
            lambda env, n=_name: entry_points(env.closed())[n](
                sync_fn if "threads" in n or n in ("spawn", "run", "options.spawn") else async_fn
            ),
            offload.Closed,
            CLOSED,
        )
    )


@case("after-shutdown:start()", offload.Closed, CLOSED)
def _(env: Env) -> Any:
    rt = env.closed()
    return on_loop(rt.start)


@case("after-shutdown:async-with", offload.Closed, CLOSED)
def _(env: Env) -> Any:
    rt = env.closed()

    async def main() -> None:
        async with rt:
            pass

    return asyncio.run(main())


@case("after-shutdown:await-run()-created-before", offload.Closed, CLOSED)
def _(env: Env) -> Any:
    rt = env.rt()
    task = rt.threads.run(sync_fn)
    rt.close(5)
    return awaited(lambda: task)


@case(
    "after-first-use:configure()",
    RuntimeError,
    r"must be called before the runtime is first used .* create an offload\.Runtime\(\.\.\.\) instead",
)
def _(env: Env) -> Any:
    rt = env.rt()
    rt.spawn(sync_fn).result(timeout=10)
    return rt.configure(threads=2)


@case(
    "before-start:start()-without-loop",
    RuntimeError,
    r"start\(\) must be called on the thread running the event loop that becomes the home loop",
)
def _(env: Env) -> Any:
    return env.rt().start()


@case(
    "start(loop=not-this-thread's)",
    RuntimeError,
    r"start\(\) must be called on the thread running the event loop",
)
def _(env: Env) -> Any:
    rt = env.rt()
    other = asyncio.new_event_loop()
    try:
        return on_loop(lambda: rt.start(other))
    finally:
        other.close()


@case(
    "before-await:result()-of-run()",
    RuntimeError,
    r"result\(\): this task was created by run\(\) and starts only when awaited",
)
def _(env: Env) -> Any:
    task = env.rt().threads.run(sync_fn)
    try:
        return task.result(timeout=1)
    finally:
        task.cancel()


@case(
    "wrong-thread:Task.result()-on-loop",
    RuntimeError,
    r"Task\.result\(\) would block the running event loop until the task ends; use 'await task' instead",
)
def _(env: Env) -> Any:
    task = env.running_task()
    return on_loop(lambda: task.result())


@case(
    "wrong-thread:Task.exception()-on-loop",
    RuntimeError,
    r"Task\.exception\(\) would block the running event loop .* use 'await task' instead",
)
def _(env: Env) -> Any:
    task = env.running_task()
    return on_loop(lambda: task.exception(timeout=1))


@case(
    "wrong-thread:close()-on-loop",
    RuntimeError,
    r"close\(\) would block the running event loop; use 'await runtime\.shutdown\(\)'",
)
def _(env: Env) -> Any:
    rt = env.rt()
    return on_loop(rt.close)


@case(
    "wrong-thread:drain_sync()-on-loop",
    RuntimeError,
    r"drain_sync\(\) would block the running event loop; use 'await runtime\.drain\(\)'",
)
def _(env: Env) -> Any:
    rt = env.rt()
    return on_loop(rt.drain_sync)


@case(
    "wrong-thread:with-Runtime-inside-a-loop",
    RuntimeError,
    r"close\(\) would block the running event loop; use 'await runtime\.shutdown\(\)'",
)
def _(env: Env) -> Any:
    def body() -> None:
        with env.rt() as rt:
            rt.spawn(sync_fn)

    return on_loop(body)


@case(
    "wrong-thread:await-task-without-loop",
    RuntimeError,
    r"awaiting an offload\.Task needs a running event loop \(from sync code use task\.result\(timeout\)\)",
)
def _(env: Env) -> Any:
    task = env.running_task()

    async def waiter() -> Any:
        return await task

    coro = waiter()
    try:
        return coro.send(None)  # driven by hand: no loop runs here
    finally:
        coro.close()


@case(
    "full:on_full=reject:threads",
    offload.Full,
    r"offload lane 'threads' is full \(max_pending=0, max_running=1\); retry later, raise the limits, or use on_full='block' or 'drop'",
)
def _(env: Env) -> Any:
    return env.full_lane_rt("threads", "reject").threads.spawn(sync_fn)


@case(
    "full:on_full=reject:background",
    offload.Full,
    r"offload lane 'background' is full \(max_pending=0, max_running=1\); retry later",
)
def _(env: Env) -> Any:
    return env.full_lane_rt("background", "reject").background.spawn(async_fn)


@case(
    "full:on_full=reject:await-run()",
    offload.Full,
    r"offload lane 'background' is full",
)
def _(env: Env) -> Any:
    rt = env.full_lane_rt("background", "reject")
    return awaited(lambda: rt.background.run(async_fn))


@case(
    "full:on_full=block-on-an-event-loop",
    offload.Full,
    r"on_full='block' can't wait on an event-loop thread; raise max_pending or spawn from a thread",
)
def _(env: Env) -> Any:
    rt = env.full_lane_rt("threads", "block")
    return on_loop(lambda: rt.threads.spawn(sync_fn))


@case(
    "processes.spawn(unpicklable-target)",
    TypeError,
    r"offload\.processes needs a picklable target and arguments",
)
def _(env: Env) -> Any:
    return env.rt().processes.spawn(lambda: 1)


@case(
    "processes.spawn(unpicklable-argument)",
    TypeError,
    r"offload\.processes needs a picklable target and arguments",
)
def _(env: Env) -> Any:
    return env.rt().processes.spawn(sync_fn, threading.Lock())


@case("processes.spawn(async-fn)", TypeError, r"offload\.processes runs sync callables")
def _(env: Env) -> Any:
    return env.rt().processes.spawn(async_fn)


@case(
    "call(sync-callable)",
    TypeError,
    r"offload\.call\(\) runs async code, and .* is a sync callable",
)
def _(env: Env) -> Any:
    return env.rt().call(sync_fn)


@case(
    "call()-on-an-event-loop", RuntimeError, r"offload\.call\(\) would block the running event loop"
)
def _(env: Env) -> Any:
    rt = env.rt()
    return on_loop(lambda: rt.call(async_fn))


@case("loop_local(non-callable)", TypeError, r"loop_local needs a factory callable, not int")
def _(env: Env) -> Any:
    return offload.loop_local(42)  # type: ignore[arg-type]


@case("loop_local.instance()-outside-a-loop", RuntimeError, r"must be called from a coroutine")
def _(env: Env) -> Any:
    return offload.loop_local(object).instance()


# issue 10, part A (the engine's edges): appended here to ease merging


class _ForgetfulRuntime(offload.Runtime):
    def __init__(self) -> None:  # no super().__init__()
        pass


@case(
    "uninitialised-Runtime-subclass:background.spawn",
    RuntimeError,
    r"was never initialised: its __init__ must call super\(\)\.__init__",
)
def _(env: Env) -> Any:
    return _ForgetfulRuntime().background.spawn(env.coro())


@case(
    "home-loop-stopped-but-open:loop.spawn-from-a-thread",
    RuntimeError,
    r"the home loop .* is stopped but not closed.* run that loop again, close it",
)
def _(env: Env) -> Any:
    rt = env.rt()
    loop = asyncio.new_event_loop()

    async def start() -> None:
        rt.start()

    loop.run_until_complete(start())
    try:
        return in_thread(lambda: rt.loop.spawn(async_fn))
    finally:
        loop.close()


@case("Task.result(timeout=nan)", ValueError, r"timeout must be a number of seconds, not nan")
def _(env: Env) -> Any:
    return env.done_task().result(timeout=float("nan"))


class _ReprRaises:
    def __call__(self) -> None:
        pass

    def __repr__(self) -> str:
        raise RuntimeError("repr raised")


@case(
    "loop.spawn(sync-callable-whose-repr-raises)",
    TypeError,
    r"offload\.loop runs coroutines, and <.*_ReprRaises object at 0x[0-9a-f]+> is a sync callable",
)
def _(env: Env) -> Any:
    return env.rt().loop.spawn(_ReprRaises())


@case("call(timeout=nan)", ValueError, r"timeout must be a number of seconds >= 0 or None, not nan")
def _(env: Env) -> Any:
    return env.rt().call(async_fn, timeout=float("nan"))


@case("loop_local(async-factory)", TypeError, r"loop_local needs a sync factory .* is an async")
def _(env: Env) -> Any:
    return offload.loop_local(async_fn)


# issue 12, periodic work (offload.every / offload.cron / @offload.periodic): appended here
# to ease merging


class _NaiveZone(datetime.tzinfo):
    def utcoffset(self, dt: datetime.datetime | None) -> None:
        return None


class _BrokenZone(datetime.tzinfo):
    def utcoffset(self, dt: datetime.datetime | None) -> datetime.timedelta:
        raise RuntimeError("no offset today")


PERIODIC_CASES: list[tuple[str, Callable[[Env], Any], type[BaseException], str]] = [
    (
        "every(seconds=0)",
        lambda env: offload.every(0, sync_fn, runtime=env.rt()),
        ValueError,
        r"every\(\) seconds must be a finite number of seconds > 0, got 0",
    ),
    (
        "every(seconds=-1)",
        lambda env: offload.every(-1, sync_fn, runtime=env.rt()),
        ValueError,
        r"must be a finite number of seconds > 0, got -1",
    ),
    (
        "every(seconds=nan)",
        lambda env: offload.every(float("nan"), sync_fn, runtime=env.rt()),
        ValueError,
        r"must be a finite number of seconds > 0, got nan",
    ),
    (
        "every(seconds=inf)",
        lambda env: offload.every(float("inf"), sync_fn, runtime=env.rt()),
        ValueError,
        r"must be a finite number of seconds > 0, got inf",
    ),
    (
        "every(seconds=huge-int)",
        lambda env: offload.every(10**400, sync_fn, runtime=env.rt()),
        ValueError,
        r"must be a finite number of seconds > 0, got a huge int",
    ),
    (
        "every(seconds=str)",
        lambda env: offload.every("5", sync_fn, runtime=env.rt()),  # type: ignore[arg-type]
        TypeError,
        r"every\(\) seconds must be a number of seconds, not str",
    ),
    (
        "every(seconds=bool)",
        lambda env: offload.every(True, sync_fn, runtime=env.rt()),
        TypeError,
        r"every\(\) seconds must be a number of seconds, not bool",
    ),
    (
        "every(non-callable)",
        lambda env: offload.every(5, 42, runtime=env.rt()),  # type: ignore[arg-type]
        TypeError,
        r"a schedule needs a callable to run, not int",
    ),
    (
        "every(coroutine-object)",
        lambda env: offload.every(5, env.coro(), runtime=env.rt()),  # type: ignore[arg-type]
        TypeError,
        r"pass the async function itself, not a coroutine object",
    ),
    (
        "every(arguments-that-don't-fit)",
        lambda env: offload.every(5, async_fn, 1, runtime=env.rt()),
        TypeError,
        r"the arguments given don't fit .*async_fn.*: too many positional arguments; pass",
    ),
    (
        "every(jitter=-1)",
        lambda env: offload.every(5, sync_fn, jitter=-1, runtime=env.rt()),
        ValueError,
        r"jitter must be a finite number of seconds >= 0, got -1",
    ),
    (
        "every(jitter=nan)",
        lambda env: offload.every(5, sync_fn, jitter=float("nan"), runtime=env.rt()),
        ValueError,
        r"jitter must be a finite number of seconds >= 0, got nan",
    ),
    (
        "every(jitter=str)",
        lambda env: offload.every(5, sync_fn, jitter="1", runtime=env.rt()),  # type: ignore[arg-type]
        TypeError,
        r"jitter must be a number of seconds, not str",
    ),
    (
        "every(overlap=unknown)",
        lambda env: offload.every(5, sync_fn, overlap="wait", runtime=env.rt()),  # type: ignore[arg-type]
        ValueError,
        r"overlap must be one of 'skip', 'queue', 'allow', got 'wait'",
    ),
    (
        "every(name=int)",
        lambda env: offload.every(5, sync_fn, name=3, runtime=env.rt()),  # type: ignore[arg-type]
        TypeError,
        r"name must be a str or None, not int",
    ),
    (
        "every(lane=unknown)",
        lambda env: offload.every(5, sync_fn, lane="gpu", runtime=env.rt()),  # type: ignore[arg-type]
        ValueError,
        r"lane must be one of loop, background, threads, processes or None, got 'gpu'",
    ),
    (
        "every(sync-callable-on-the-loop-lane)",
        lambda env: offload.every(5, sync_fn, lane="loop", runtime=env.rt()),
        TypeError,
        r"offload\.loop runs coroutines, and .*sync_fn.* is a sync callable; use lane='threads'",
    ),
    (
        "every(async-function-on-the-threads-lane)",
        lambda env: offload.every(5, async_fn, lane="threads", runtime=env.rt()),
        TypeError,
        r"offload\.threads runs sync callables, and .*async_fn.* is an async function; use",
    ),
    (
        "every(unpicklable-target-on-the-processes-lane)",
        lambda env: offload.every(5, lambda: 1, lane="processes", runtime=env.rt()),
        TypeError,
        r"offload\.processes needs a picklable target and arguments, and <function <lambda>",
    ),
    (
        "periodic(lane=unknown)",
        lambda env: offload.periodic(every=5, lane="gpu", runtime=env.rt()),  # type: ignore[arg-type]
        ValueError,
        r"lane must be one of loop, background, threads, processes or None, got 'gpu'",
    ),
    (
        "periodic(name=bytes)",
        lambda env: offload.periodic(every=5, name=b"x", runtime=env.rt()),  # type: ignore[arg-type]
        TypeError,
        r"name must be a str or None, not bytes",
    ),
    (
        "every(runtime=str)",
        lambda env: offload.every(5, sync_fn, runtime="default"),  # type: ignore[arg-type]
        TypeError,
        r"runtime must be an offload\.Runtime or None, not str",
    ),
    (
        "cron(unparsable)",
        lambda env: offload.cron("every day", sync_fn, runtime=env.rt()),
        ValueError,
        r"cron expression 'every day' is not valid \(Wrong number of fields\); pass five fields",
    ),
    (
        "cron(minute-61)",
        lambda env: offload.cron("61 * * * *", sync_fn, runtime=env.rt()),
        ValueError,
        r"cron expression '61 \* \* \* \*' is not valid \(Bad minute\); pass five fields",
    ),
    (
        "cron(february-31)",
        lambda env: offload.cron("0 0 31 2 *", sync_fn, runtime=env.rt()),
        ValueError,
        r"cron expression '0 0 31 2 \*' is not valid \(Bad day-of-month\)",
    ),
    (
        "cron(None)",
        lambda env: offload.cron(None, sync_fn, runtime=env.rt()),  # type: ignore[arg-type]
        TypeError,
        r"a cron expression must be a str such as '\*/5 \* \* \* \*', not NoneType",
    ),
    (
        "cron(tz=unknown-name)",
        lambda env: offload.cron("* * * * *", sync_fn, tz="Mars/Olympus", runtime=env.rt()),
        ValueError,
        r"unknown time zone 'Mars/Olympus'; pass an IANA name such as 'Europe/Paris'",
    ),
    (
        "cron(tz=path)",
        lambda env: offload.cron("* * * * *", sync_fn, tz="../../etc/passwd", runtime=env.rt()),
        ValueError,
        r"unknown time zone '\.\./\.\./etc/passwd'",
    ),
    (
        "cron(tz=int)",
        lambda env: offload.cron("* * * * *", sync_fn, tz=5, runtime=env.rt()),  # type: ignore[arg-type]
        TypeError,
        r"tz must be a time zone name \(str\), a tzinfo or None, not int",
    ),
    (
        "cron(tz=naive-tzinfo)",
        lambda env: offload.cron("* * * * *", sync_fn, tz=_NaiveZone(), runtime=env.rt()),
        ValueError,
        r"tz <.*_NaiveZone.*> is naive \(its utcoffset\(\) is None\); pass",
    ),
    (
        "cron(tz=tzinfo-that-raises)",
        lambda env: offload.cron("* * * * *", sync_fn, tz=_BrokenZone(), runtime=env.rt()),
        ValueError,
        r"can't tell its UTC offset \(RuntimeError\); pass",
    ),
    (
        "cron(non-callable)",
        lambda env: offload.cron("* * * * *", "report", runtime=env.rt()),  # type: ignore[arg-type]
        TypeError,
        r"a schedule needs a callable to run, not str",
    ),
    (
        "periodic(neither-every-nor-cron)",
        lambda env: offload.periodic(runtime=env.rt()),
        TypeError,
        r"@offload\.periodic needs exactly one of every=seconds or cron='\.\.\.'",
    ),
    (
        "periodic(both-every-and-cron)",
        lambda env: offload.periodic(every=5, cron="* * * * *", runtime=env.rt()),
        TypeError,
        r"@offload\.periodic needs exactly one of",
    ),
    (
        "periodic(every=0)",
        lambda env: offload.periodic(every=0, runtime=env.rt()),
        ValueError,
        r"every must be a finite number of seconds > 0, got 0",
    ),
    (
        "periodic(every-with-tz)",
        lambda env: offload.periodic(every=5, tz="UTC", runtime=env.rt()),
        TypeError,
        r"tz= is for cron= schedules; an every= schedule has no time zone",
    ),
    (
        "periodic(cron-with-jitter)",
        lambda env: offload.periodic(cron="* * * * *", jitter=1, runtime=env.rt()),
        TypeError,
        r"jitter= is for every= schedules",
    ),
    (
        "periodic(cron=unparsable)",
        lambda env: offload.periodic(cron="*/0 * * * *", runtime=env.rt()),
        ValueError,
        r"cron expression '\*/0 \* \* \* \*' is not valid \(Bad minute\)",
    ),
    (
        "periodic(overlap=unknown)",
        lambda env: offload.periodic(every=5, overlap="never", runtime=env.rt()),  # type: ignore[arg-type]
        ValueError,
        r"overlap must be one of 'skip', 'queue', 'allow', got 'never'",
    ),
    (
        "periodic(runtime=int)",
        lambda env: offload.periodic(every=5, runtime=1),  # type: ignore[arg-type]
        TypeError,
        r"runtime must be an offload\.Runtime or None, not int",
    ),
    (
        "periodic(...)(non-callable)",
        lambda env: offload.periodic(every=5, runtime=env.rt())(42),  # type: ignore[type-var]
        TypeError,
        r"a schedule needs a callable to run, not int",
    ),
    (
        "periodic(...)(function-that-needs-arguments)",
        lambda env: offload.periodic(every=5, runtime=env.rt())(sync_fn_needing_one),
        TypeError,
        r"the arguments given don't fit .*sync_fn_needing_one.*missing a required argument",
    ),
    (
        "after-shutdown:every",
        lambda env: offload.every(5, sync_fn, runtime=env.closed()),
        offload.Closed,
        r"this offload runtime is shut down and runs no schedule; create a new offload\.Runtime",
    ),
    (
        "after-shutdown:cron",
        lambda env: offload.cron("* * * * *", sync_fn, runtime=env.closed()),
        offload.Closed,
        r"this offload runtime is shut down and runs no schedule",
    ),
]


def sync_fn_needing_one(x: int) -> int:
    return x


for _id, _call, _exc, _match in PERIODIC_CASES:
    CASES.append(Case(_id, _call, _exc, _match))


# --- the tests -------------------------------------------------------------------------------


def _params() -> list[Any]:
    return [
        pytest.param(
            c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.bug)] if c.bug else []
        )
        for c in CASES
    ]


@pytest.fixture
def env() -> Iterator[Env]:
    e = Env()
    try:
        yield e
    finally:
        e.close()


@pytest.mark.parametrize("c", _params())
def test_bad_input_is_refused_at_the_call_site_with_a_clear_error(c: Case, env: Env) -> None:
    with pytest.raises(BaseException) as info:
        c.call(env)
    err = info.value
    assert type(err) is c.exc, f"{type(err).__name__}: {err}"
    message = str(err)
    assert re.search(c.match, message), message
    if not c.python_message:
        assert says_what_to_do(message), f"the message doesn't say what to do: {message!r}"


def test_catalogue_ids_are_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


def test_run_never_awaited_warns_that_nothing_ran() -> None:
    rt = offload.Runtime()
    task = rt.threads.run(sync_fn)
    with pytest.warns(
        RuntimeWarning, match=r"offload run\(\) of .* was never awaited; nothing ran"
    ):
        del task  # the last reference: the task is freed right here
    rt.close(2)


def test_bad_input_does_not_change_state() -> None:
    """Refused calls leave nothing behind: no task, no counter, no started runtime."""
    rt = offload.Runtime()
    for bad in (42, None, "x"):
        for spawn in entry_points(rt).values():
            with pytest.raises(TypeError):
                spawn(bad)
    with pytest.raises(TypeError):
        rt.loop.spawn(sync_fn)
    with pytest.raises(TypeError):
        rt.threads.spawn(async_fn)
    with pytest.raises(TypeError):
        rt.background.spawn(async_fn, 1)
    assert not rt.started
    assert all(s["submitted"] == 0 for s in rt.stats().values())
    assert rt._live_tasks() == []
    rt.close(1)


CONFIGURE_AFTER_USE = """
import offload
offload.spawn(print, "first use").result(timeout=10)
try:
    offload.configure(threads=2)
except RuntimeError as exc:
    print("RuntimeError:", exc)
"""


def test_offload_configure_after_first_use_in_a_fresh_process() -> None:
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", CONFIGURE_AFTER_USE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert (
        "RuntimeError: offload.configure() must be called before the runtime is first used"
        in out.stdout
    ), out.stdout + out.stderr
    assert "create an offload.Runtime(...) instead" in out.stdout


def count_cases() -> int:
    """Bad inputs tried (for docs/reliability.md)."""
    return len(CASES) + 2  # + never-awaited run() + configure() after first use


if __name__ == "__main__":  # python tests/test_bad_input.py: print the catalogue
    for c in CASES:
        print(f"{c.id:55} {c.exc.__name__:14} {'BUG' if c.bug else ''}")
    print(count_cases(), "bad inputs")
