"""Delayed work (issue 12): memory of scheduled tasks, and how late their timers fire.

Memory (`python bench/timers.py FORM MODE N`, a fresh interpreter per sample, as in
bench/memory.py): N tasks on a threads lane whose only worker (`max_running=1`) is
blocked on an Event, so none starts. FORM is

* `pending`: plain `spawn(f)`: N tasks waiting in the lane's queue (the baseline);
* `shared view`: `view = rt.threads.options(delay=3600)` once, then `view.spawn(f)`;
* `options per call`: `rt.threads.options(delay=3600).spawn(f)` each time.

MODE `tracemalloc` counts Python allocations (the engine's controls record comes from
`PyMem_Calloc`, its timer heap from `PyMem_Realloc`: both are traced), `rss` the
resident set. Then every task is cancelled, the list dropped, and what is still held is
measured again ("left after cancel"), with `rt._timers_armed()` (must be 0).

Lateness: tasks spawned with delays spread evenly (in shuffled order) over `spread`
seconds; each task's code reads `time.monotonic()` as its first act, and lateness is that
minus the due time (`time.monotonic()` read just before its spawn + its delay, so the
spawn call itself counts against us). "busy" means: on the same event loop, a coroutine
spawns 50 trivial `rt.loop.spawn(noop())` tasks and yields (`await asyncio.sleep(0)`),
forever, so the loop never sleeps; its rate is printed. The offload lanes run on asyncio
and on uvloop, the usual recipes (`loop.call_later` + `run_in_executor` / `create_task`)
on asyncio.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import random
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop
from common import Benchmark, f, make_benchmark, noop, percentile
from memory import _rss

import offload

FORMS = ("pending", "shared view", "options per call")
BUSY_BATCH = 50  # trivial loop tasks spawned per loop iteration by the busy load


# --- memory ------------------------------------------------------------------------------
def _used(mode: str) -> Callable[[], int]:
    gc.collect()
    if mode == "tracemalloc":
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        return lambda: tracemalloc.get_traced_memory()[0] - before
    before = _rss()
    return lambda: _rss() - before


def held(form: str, mode: str, n: int) -> dict[str, Any]:
    """Bytes per task held by `n` tasks of `form`, then per task left after cancelling."""
    rt = offload.Runtime(lanes={"threads": {"max_running": 1}})
    gate = threading.Event()
    rt.threads.spawn(gate.wait)
    time.sleep(0.05)
    threads = rt.threads
    view = threads.options(delay=3600) if form == "shared view" else threads
    tasks: list[Any] = [None] * n
    used = _used(mode)
    if form == "options per call":
        for i in range(n):
            tasks[i] = threads.options(delay=3600).spawn(f)
    else:
        for i in range(n):
            tasks[i] = view.spawn(f)
    holding = used()
    states = {tasks[0].state, tasks[-1].state}
    for task in tasks:
        task.cancel()
    tasks[:] = [None] * n
    gc.collect()
    left, armed = used(), rt._timers_armed()
    gate.set()
    rt.close(60)
    return {"held": holding / n, "left": left / n, "armed": armed, "states": sorted(states)}


def _held_sample(form: str, mode: str, n: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, form, mode, str(n)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def memory(rounds: int, n: int) -> list[Benchmark]:
    out = []
    for mode in ("tracemalloc", "rss"):
        held_s: dict[str, list[float]] = {form: [] for form in FORMS}
        extra: dict[str, list[float]] = {f"{form}, beyond pending": [] for form in FORMS[1:]}
        left: dict[str, list[float]] = {f"{form}, left after cancel": [] for form in FORMS}
        for r in range(rounds):
            got: dict[str, dict[str, Any]] = {}
            for form in FORMS[r % 3 :] + FORMS[: r % 3]:
                got[form] = _held_sample(form, mode, n)
                want = ["pending"] if form == "pending" else ["scheduled"]
                if got[form]["armed"] != 0 or got[form]["states"] != want:
                    raise RuntimeError(f"{form}: unexpected {got[form]}")
            for form in FORMS:
                held_s[form].append(got[form]["held"])
                left[f"{form}, left after cancel"].append(got[form]["left"])
            for form in FORMS[1:]:
                extra[f"{form}, beyond pending"].append(got[form]["held"] - got["pending"]["held"])
        out.append(
            make_benchmark(
                f"scheduled_memory_{mode}",
                f"memory per task, {n:,} delayed (3600 s) vs pending, threads lane ({mode})",
                "bytes/task",
                {**held_s, **extra, **left},
                pairs=[],
                higher_is_better=False,
                note="_timers_armed() == 0 after cancelling, every sample",
            )
        )
    return out


# --- lateness ------------------------------------------------------------------------------
async def _busy(rt: offload.Runtime, stop: asyncio.Event, gaps: list[float]) -> None:
    """The busy load; `gaps`: the time between its turns (one loop iteration each)."""
    spawn = rt.loop.spawn
    last = time.monotonic()
    while not stop.is_set():
        for _ in range(BUSY_BATCH):
            spawn(noop())
        await asyncio.sleep(0)
        now = time.monotonic()
        gaps.append(now - last)
        last = now


Mark = Callable[[int], None]
#: Arms task i to run `mark(i)` after `delay` s; returns something to await, or None.
Arm = Callable[[offload.Runtime, float, Mark, int], "Awaitable[object] | None"]


async def _amark(mark: Mark, i: int) -> None:
    mark(i)


def _threads_lane(rt: offload.Runtime, delay: float, mark: Mark, i: int) -> Awaitable[object]:
    return rt.threads.options(delay=delay).spawn(mark, i)


def _loop_lane(rt: offload.Runtime, delay: float, mark: Mark, i: int) -> Awaitable[object]:
    return rt.loop.options(delay=delay).spawn(_amark, mark, i)


def _timer_thread(rt: offload.Runtime, delay: float, mark: Mark, i: int) -> None:
    rt._call_later(delay, functools.partial(mark, i))


def _call_later_to_thread(
    rt: offload.Runtime, delay: float, mark: Mark, i: int
) -> Awaitable[object]:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[object] = loop.create_future()
    loop.call_later(delay, lambda: done.set_result(loop.run_in_executor(None, mark, i)))
    return done


def _call_later_create_task(
    rt: offload.Runtime, delay: float, mark: Mark, i: int
) -> Awaitable[object]:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[object] = loop.create_future()
    loop.call_later(delay, lambda: done.set_result(loop.create_task(_amark(mark, i))))
    return done


#: Where the delayed code runs. "timer thread" is the engine's timer thread itself (its
#: private `_call_later`, what periodic schedules use): the part of the lateness that comes
#: before any lane is involved. The last two are the usual recipes, for reference.
ARMS: dict[str, Arm] = {
    "offload threads lane": _threads_lane,
    "offload loop lane": _loop_lane,
    "offload timer thread (_call_later)": _timer_thread,
    "asyncio call_later + run_in_executor": _call_later_to_thread,
    "asyncio call_later + create_task": _call_later_create_task,
}
UVLOOP_ARMS = ("offload threads lane", "offload loop lane")


def lateness(
    arm: Arm, busy: bool, n: int, spread: float, uv: bool = False
) -> tuple[list[float], list[float]]:
    """Lateness of each of `n` delayed tasks (s), and the busy loop's iteration times."""
    started = [0.0] * n
    due = [0.0] * n
    delays = [0.05 + spread * i / n for i in range(n)]
    random.Random(n).shuffle(delays)

    def mark(i: int) -> None:
        started[i] = time.monotonic()

    gaps: list[float] = []

    async def main() -> None:
        async with offload.Runtime() as rt:
            stop = asyncio.Event()
            load = asyncio.ensure_future(_busy(rt, stop, gaps)) if busy else None
            await asyncio.sleep(0.05)
            waits = []
            for i in range(n):
                due[i] = time.monotonic() + delays[i]
                waits.append(arm(rt, delays[i], mark, i))
            for wait in waits:
                if wait is not None:
                    got = await wait
                    if isinstance(got, Awaitable):  # the usual recipes' inner future
                        await got
            while rt._timers_armed() or not all(started):
                await asyncio.sleep(0.02)
            stop.set()
            if load is not None:
                await load

    loop = uvloop.new_event_loop() if uv else asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    return [s - d for s, d in zip(started, due, strict=True)], gaps


def _summary(values: list[float]) -> dict[str, float]:
    return {"p50": percentile(values, 50), "p99": percentile(values, 99), "max": max(values)}


def firing(rounds: int, n: int, spread: float) -> list[Benchmark]:
    stats = ("p50", "p99", "max")
    samples: dict[str, dict[str, list[float]]] = {q: {} for q in stats}
    rates: list[float] = []
    # The offload lanes run on uvloop too (the usual recipes: asyncio only).
    places = [(name, False) for name in ARMS]
    places[2:2] = [(name, True) for name in UVLOOP_ARMS]
    cases = [(*place, busy) for busy in (False, True) for place in places]
    for r in range(rounds):
        for where, uv, busy in cases[r % len(cases) :] + cases[: r % len(cases)]:
            gc.collect()
            late, gaps = lateness(ARMS[where], busy, n, spread, uv)
            kind = f"{'busy' if busy else 'idle'} {'uvloop' if uv else 'loop'}"
            rows = {f"{where}, {kind}": _summary(late)}
            if busy:
                rates.append(BUSY_BATCH * len(gaps) / sum(gaps))
                rows[f"(the busy {'uvloop' if uv else 'loop'}'s own iteration time)"] = _summary(
                    gaps
                )
            for name, values in rows.items():
                for q in stats:
                    samples[q].setdefault(name, []).append(values[q] * 1e3)
    note = (
        f"busy: the loop spawns {BUSY_BATCH} trivial loop tasks per iteration and never"
        f" sleeps, median {statistics.median(rates):,.0f} tasks/s"
    )
    return [
        make_benchmark(
            f"timer_lateness_{q}",
            f"timer firing lateness {q}, {n:,} delayed tasks over {spread:g} s",
            "ms",
            samples[q],
            pairs=[],
            higher_is_better=False,
            note=note,
        )
        for q in stats
    ]


def run(rounds: int, n: int, late_n: int, spread: float) -> list[Benchmark]:
    return [*memory(rounds, n), *firing(rounds, late_n, spread)]


if __name__ == "__main__":
    print(json.dumps(held(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
