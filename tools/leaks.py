"""Refleak hunt, the way CPython's `regrtest -R` does it: run each scenario a few times
to warm caches, then repeatedly, and require that live objects and allocated memory
blocks stay at their baseline. Exit status 1 on a leak.

Usage: python tools/leaks.py [--rounds N] [--warmup N] [SCENARIO ...]

The measurement is exact (every round of every scenario measures 0 growth on a clean
engine), because three kinds of noise that are not offload's are removed first:

* the figures are stored in preallocated arrays: a list of ints would itself grow by
  two blocks per round (ints above 256 are allocated);
* CPython's type attribute cache is cleared before counting (as regrtest does): it
  keeps up to 4,096 attribute-name strings alive, and fills over hundreds of rounds
  (asyncio builds names like 'repr_' + typename), which looks like a slow leak;
* entries of threading._active for C threads that have exited are dropped: CPython 3.11
  adds a _DummyThread for every foreign thread that touches `threading` (offload's loop
  and pool threads do) and never removes it; it lingers until its ident is reused.

Each round also waits until every thread it started has exited, so no late DECREF from a
pool thread lands after the count. A scenario leaks if, over the measured rounds, the
blocks or the objects grow (median of the last three rounds above that of the first
three) and grow again over a second, twice as long window: a one-off spike from a noisy
machine is not a leak, a per-task or per-runtime leak of even one block is. On a leak
the top allocation sites (tracemalloc) are printed.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import gc
import logging
import os
import statistics
import sys
import threading
import time
import tracemalloc
import warnings
from collections.abc import Callable

import offload

logging.getLogger("offload").setLevel(logging.CRITICAL)

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a test dependency
    uvloop = None


def sync_work(i: int) -> int:
    if i % 7 == 0:
        raise ValueError(i)
    return i


async def async_work(i: int) -> int:
    await asyncio.sleep(0)
    if i % 7 == 0:
        raise ValueError(i)
    return i


async def async_ok(i: int) -> int:
    await asyncio.sleep(0)
    return i


def quiet(task: object, exc: BaseException) -> None:
    pass


# --- scenarios: each runs one round and returns how many spawns it made -------------------


def scenario_lanes() -> int:
    """Every lane, with failures; awaited run() on the thread pool."""

    async def main() -> None:
        async with offload.Runtime(threads=4, error_handler=quiet) as rt:
            for i in range(200):
                rt.spawn(sync_work, i)
                rt.spawn(async_work, i)
                rt.background.spawn(async_work, i)
            results = await asyncio.gather(
                *[rt.threads.run(sync_work, i) for i in range(1, 100) if i % 7]
            )
            assert len(results) == 85
            try:
                await rt.run(sync_work, 0)
            except ValueError:
                pass
            await rt.drain(10)

    asyncio.run(main())
    return 600 + 85 + 1


def scenario_cancel_and_limits() -> int:
    """on_full="drop", cancelled pending sync tasks and running coroutines."""

    async def main() -> None:
        async with offload.Runtime(
            threads=1,
            lanes={"threads": {"max_pending": 10, "on_full": "drop"}},
            error_handler=quiet,
        ) as rt:
            gate = threading.Event()
            rt.threads.spawn(gate.wait)
            tasks = [rt.threads.spawn(sync_work, i) for i in range(50)]
            for t in tasks[::2]:
                t.cancel()
            coros = [rt.loop.spawn(asyncio.sleep, 5) for _ in range(50)]
            await asyncio.sleep(0)
            for t in coros:
                t.cancel()
            gate.set()
            await rt.drain(10)

    asyncio.run(main())
    return 101


def scenario_sync_runtime() -> int:
    """A runtime used from sync code: exception(timeout), done callbacks, drain_sync."""
    with offload.Runtime(threads=2, error_handler=quiet) as rt:
        tasks = [rt.spawn(sync_work, i) for i in range(300)]
        for t in tasks:
            t.exception(timeout=10)
        cbs: list[int] = []
        rt.spawn(sync_work, 1).add_done_callback(lambda t: cbs.append(t.result()))
        rt.drain_sync(10)
    return 301


def scenario_refusals() -> int:
    """Refused calls must free what they were given: Full (on_full="reject", a sync
    callable and a coroutine, spawn and awaited run), bad targets, a coroutine sent to
    the thread pool, spawns after shutdown (Closed), and on_full="block" spawners."""
    n = 0

    async def coro(i: int) -> int:
        return i

    async def main() -> offload.Runtime:
        nonlocal n
        full = {"max_running": 1, "max_pending": 0, "on_full": "reject"}
        async with offload.Runtime(lanes={"threads": full, "background": full}) as rt:
            gate = threading.Event()
            rt.threads.spawn(gate.wait, 10)
            blocker = rt.background.spawn(asyncio.sleep, 10)
            for i in range(50):
                n += 2
                try:
                    rt.threads.spawn(pow, i, 2)
                except offload.Full:
                    pass
                try:
                    rt.background.spawn(coro, i)
                except offload.Full:
                    pass
                n += 1
                try:
                    await rt.background.run(coro, i)
                except offload.Full:
                    pass
                for bad in (42, None, "print"):
                    try:
                        rt.spawn(bad)
                    except TypeError:
                        pass
                c = coro(i)
                try:
                    rt.threads.spawn(c)
                except TypeError:
                    c.close()
                try:
                    rt.loop.spawn(pow, i, 2)
                except TypeError:
                    pass
            gate.set()
            blocker.cancel()
            await rt.drain(10)
        return rt

    rt = asyncio.run(main())
    for i in range(20):
        n += 2
        try:
            rt.threads.spawn(pow, i, 2)
        except offload.Closed:
            pass
        try:
            rt.background.spawn(coro, i)
        except offload.Closed:
            pass
    # on_full="block": spawners from threads wait for room, then get in.
    block = {"max_running": 1, "max_pending": 1, "on_full": "block"}
    with offload.Runtime(threads=1, lanes={"threads": block}) as brt:

        def producer() -> None:
            for i in range(25):
                brt.threads.spawn(pow, i, 2)

        producers = [threading.Thread(target=producer) for _ in range(4)]
        for t in producers:
            t.start()
        for t in producers:
            t.join(30)
        brt.drain_sync(10)
        n += 100
    return n


def scenario_waiting() -> int:
    """Awaiting tasks of every lane, result() timeouts, cancellation from outside
    (asyncio.wait_for), callbacks added before and after the end, callbacks and an
    error_handler that raise."""

    def raising_handler(task: object, exc: BaseException) -> None:
        raise RuntimeError("the handler is broken")

    def raising_callback(task: object) -> None:
        raise KeyError("the callback is broken")

    async def main() -> None:
        async with offload.Runtime(threads=3, error_handler=raising_handler) as rt:
            for i in range(40):
                assert await rt.threads.spawn(pow, i, 2) == i * i
                assert await rt.loop.spawn(async_ok, i) == i
                assert await rt.background.spawn(async_ok, i) == i
                t = rt.threads.spawn(sync_work, i)
                t.add_done_callback(raising_callback)
                t.add_done_callback(lambda task: None)
                try:
                    await t
                except ValueError:
                    pass
                t.add_done_callback(lambda task: None)  # after the end: runs at once
                try:
                    await asyncio.wait_for(rt.loop.run(asyncio.sleep, 1), 0.001)
                except asyncio.TimeoutError:
                    pass
                try:
                    await asyncio.wait_for(rt.background.run(asyncio.sleep, 1), 0.001)
                except asyncio.TimeoutError:
                    pass
            gate = threading.Event()
            slow = rt.threads.spawn(gate.wait, 10)

            def timeouts() -> None:
                for _ in range(20):
                    try:
                        slow.result(timeout=0.001)
                    except TimeoutError:
                        pass

            await asyncio.to_thread(timeouts)
            gate.set()
            await rt.drain(10)

    asyncio.run(main())
    return 40 * 6 + 1


def scenario_dropped_runtime() -> int:
    """A runtime dropped without shutdown, with tasks done and a run() never awaited."""
    rt = offload.Runtime(threads=2, idle_timeout=0.01)
    done = threading.Event()
    for i in range(50):
        rt.threads.spawn(pow, i, 2)
    rt.threads.spawn(done.set)
    done.wait(10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "run() ... was never awaited"
        never = rt.threads.run(pow, 2, 2)
        del never
    del rt
    return 52


def scenario_uvloop() -> int:
    """A uvloop home loop and uvloop background loops (loop_factory)."""
    assert uvloop is not None

    async def main() -> None:
        async with offload.Runtime(
            threads=2, error_handler=quiet, loop_factory=uvloop.new_event_loop
        ) as rt:
            for i in range(100):
                rt.loop.spawn(async_work, i)
                rt.background.spawn(async_work, i)
            await asyncio.gather(*[rt.background.run(asyncio.sleep, 0) for _ in range(50)])
            await rt.drain(10)

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    return 250


def scenario_processes() -> int:
    """The processes lane: results and failures crossing from worker processes."""
    with offload.Runtime(processes=2, error_handler=quiet) as rt:
        tasks = [rt.processes.spawn(pow, i, 2) for i in range(100)]
        tasks += [rt.processes.spawn(int, "not a number") for _ in range(10)]
        for t in tasks:
            t.exception(timeout=60)
    return 110


_long_lived_loop: list[asyncio.AbstractEventLoop] = []


def scenario_edges() -> int:
    """Issue 10's paths: runtimes on one long-lived loop giving back their bridges; a
    failure awaited from a loop closed under the await (reported, not delivered); a
    full loop lane reclaiming a closed loop's slots; remove_done_callback."""
    if not _long_lived_loop:
        _long_lived_loop.append(asyncio.new_event_loop())
    loop = _long_lived_loop[0]

    async def a_runtime() -> None:
        async with offload.Runtime(threads=1, error_handler=quiet) as rt:
            await rt.loop.run(async_work, 1)
            await rt.threads.run(sync_work, 1)

    for _ in range(3):
        loop.run_until_complete(a_runtime())
    with offload.Runtime(threads=1, error_handler=quiet, lanes={"loop": {"max_running": 2}}) as rt:
        gate = threading.Event()
        failing = rt.threads.spawn(lambda: gate.wait(10) and int("x"))
        dead = asyncio.new_event_loop()

        async def awaiter() -> None:
            await failing

        async def fill() -> None:
            for _ in range(2):
                rt.loop.spawn(asyncio.sleep, 3600)

        waiting = dead.create_task(awaiter())
        dead.run_until_complete(fill())
        dead.run_until_complete(asyncio.sleep(0.01))
        for task in asyncio.all_tasks(dead):
            task._log_destroy_pending = False  # type: ignore[attr-defined]
        dead.close()
        gate.set()
        failing.exception(timeout=10)
        loop.run_until_complete(rt.loop.run(async_work, 2))  # reclaims the dead slots
        callback_task = rt.threads.spawn(sync_work, 3)
        callback_task.add_done_callback(quiet_callback)
        callback_task.remove_done_callback(quiet_callback)
        callback_task.result(timeout=10)
        del waiting
    return 9


def scenario_periodic() -> int:
    """Periodic work (issue 12): every and cron schedules fired by moving the engine
    clock, a run queued behind an overrun and one skipped, cancel, shutdown with a
    schedule armed."""
    spawned = 0

    async def main() -> None:
        nonlocal spawned
        async with offload.Runtime(threads=2, error_handler=quiet) as rt:
            gate = threading.Event()
            beat = offload.every(1, sync_work, 3, runtime=rt, jitter=0.5)
            slow = offload.every(1, gate.wait, 5, runtime=rt, overlap="queue")
            minutely = offload.cron("* * * * *", async_ok, 2, runtime=rt, tz="Europe/Paris")
            failing = offload.every(1, sync_work, 0, runtime=rt, overlap="allow")
            deadline = time.monotonic() + 60

            def fired(n: int) -> bool:
                # ... and the cron run done: a run still going when the next is due is
                # skipped (overlap="skip"), which a loaded machine would otherwise cause.
                last = minutely.last_task
                done = last is not None and last.done()
                return minutely.runs >= n and beat.runs >= n and failing.runs >= n and done

            for n in range(1, 4):
                rt._advance_clock(60)
                while not fired(n):
                    assert time.monotonic() < deadline, "the schedules did not fire"
                    await asyncio.sleep(0.001)
            gate.set()
            beat.cancel()
            await rt.drain(10)
            spawned = beat.runs + slow.runs + minutely.runs + failing.runs

    asyncio.run(main())
    return spawned


def quiet_callback(task: object) -> None:
    pass


class _FailTwice:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> int:
        self.calls += 1
        if self.calls < 3:
            raise ConnectionError("try again")
        return self.calls


def scenario_controls() -> int:
    """Issue 12's paths: 10,000 delayed tasks cancelled before they run; retries with a
    fresh coroutine per attempt; timeouts on threads (overrun) and on the loop; dedup
    keys (join, reject, replace); per-key limits; lookups of live and finished tasks."""
    with offload.Runtime(error_handler=quiet, keep_finished=50) as rt:
        view = rt.threads.options(delay=3600)
        delayed = [view.spawn(sync_work, i) for i in range(10_000)]
        for t in delayed:
            t.cancel()
        del delayed

        async def main() -> None:
            flaky = _FailTwice()
            await rt.loop.options(retries=3, backoff=0).spawn(flaky.__call__)
            try:
                await rt.loop.options(timeout=0.01).spawn(asyncio.sleep, 3600)
            except TimeoutError:
                pass
            keyed = rt.loop.options(key="k", delay=3600)
            held = keyed.spawn(async_work, 1)
            assert keyed.spawn(async_work, 2) is held
            try:
                rt.loop.options(key="k", on_duplicate="reject").spawn(async_work, 3)
            except offload.Duplicate:
                pass
            rt.loop.options(key="k", on_duplicate="replace").spawn(async_work, 4)
            limited = rt.options(limit_key="t", limit=2)
            await asyncio.gather(*(limited.spawn(async_ok, i) for i in range(20)))
            rt.get(held.id)
            rt.tasks()

        asyncio.run(main())
        stuck = rt.threads.options(timeout=0.01).spawn(time.sleep, 0.05)
        stuck.exception(timeout=10)
        while rt.threads.stats()["overrun"]:
            time.sleep(0.01)
    return 10_040


def durable_fail(i: int) -> int:
    raise ConnectionError(f"durable attempt of {i} failed")


def scenario_durable() -> int:
    """Issue 13's durable tier on an in-memory store: spawns of plain and coroutine
    functions, results read back, retries to the dead-letter set, keys, delayed tasks
    cancelled, lookups, the release of a running task at shutdown."""
    rt = offload.Runtime(store="memory://", lease=5.0, error_handler=quiet)
    handles = [rt.durable.spawn(sync_work, i) for i in range(100)]
    handles += [rt.durable.spawn(async_work, i) for i in range(50)]
    for h in handles:
        try:
            h.result_sync(30)
        except offload.durable.DurableTaskFailed:  # sync_work/async_work fail every 7th
            pass
    dead = rt.durable.options(retries=1, backoff=0).spawn(durable_fail, 1)
    try:
        dead.result_sync(30)
    except offload.durable.DurableTaskFailed:
        pass
    keyed = rt.durable.options(key="k", delay=3600)
    first = keyed.spawn(sync_work, 1)
    keyed.spawn(sync_work, 2).wait_persisted(30)
    first.cancel()
    rt.durable.tasks(limit=20)
    rt.durable.depths()
    rt.durable.spawn(time.sleep, 0.5)
    rt.durable.flush_sync(30)
    deadline = time.monotonic() + 30
    while rt.durable.depths().by_state["running"] == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    rt.close(0.1)
    return len(handles) + 4


SCENARIOS: dict[str, Callable[[], int]] = {
    fn.__name__.removeprefix("scenario_"): fn
    for fn in (
        scenario_lanes,
        scenario_cancel_and_limits,
        scenario_sync_runtime,
        scenario_refusals,
        scenario_waiting,
        scenario_dropped_runtime,
        scenario_uvloop,
        scenario_processes,
        scenario_edges,
        scenario_durable,
        scenario_controls,
        scenario_periodic,
    )
    if fn is not scenario_uvloop or uvloop is not None
}


# --- measurement ----------------------------------------------------------------------------


def os_threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:  # not Linux: fall back to a pause
        time.sleep(0.1)
        return 0


def forget_exited_dummy_threads() -> None:
    try:
        alive = {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:
        return
    active: dict[int, threading.Thread] = threading._active  # type: ignore[attr-defined]
    for ident, thread in list(active.items()):
        if isinstance(thread, threading._DummyThread) and thread.native_id not in alive:
            del active[ident]


def settle(threads_before: int) -> None:
    """Let the round's threads exit (their last DECREFs), then drop CPython's noise."""
    deadline = time.monotonic() + 10
    while os_threads() > threads_before and time.monotonic() < deadline:
        time.sleep(0.005)
    forget_exited_dummy_threads()
    gc.collect()
    sys._clear_type_cache()


def measure(fn: Callable[[], int], rounds: int) -> tuple[array.array[int], array.array[int]]:
    blocks = array.array("q", bytes(8 * rounds))
    objects = array.array("q", bytes(8 * rounds))
    for i in range(rounds):
        before = os_threads()
        fn()
        settle(before)
        blocks[i] = sys.getallocatedblocks()
        objects[i] = len(gc.get_objects())
    return blocks, objects


def grows(values: array.array[int]) -> bool:
    return statistics.median(values[-3:]) > statistics.median(values[:3])


def grows_to_the_end(values: array.array[int]) -> bool:
    """The confirmation: grown in the median and still above the start at the last
    round. A leak of even one block per round does both; a late thread's bookkeeping
    (threading's _dangling set) that comes and goes within the window does not."""
    return grows(values) and values[-1] > values[0]


def top_allocation_sites(fn: Callable[[], int], rounds: int = 10) -> str:
    tracemalloc.start(25)
    try:
        measure(fn, 3)
        first = tracemalloc.take_snapshot()
        measure(fn, rounds)
        last = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    lines = []
    for stat in last.compare_to(first, "traceback")[:5]:
        if stat.count_diff <= 0:
            continue
        lines.append(f"  +{stat.count_diff} blocks, +{stat.size_diff} B over {rounds} rounds at")
        lines += ["    " + line for line in stat.traceback.format()[-8:]]
    return "\n".join(lines) or "  (no growth tracemalloc can see: raw allocations in C?)"


_kept: list[bytes] = []


def canary_leak_one_block_per_round() -> int:
    """A seeded leak: one object per round, not GC-tracked (as a C leak would be)."""
    scenario_sync_runtime()
    _kept.append(bytes(range(40)) + os.urandom(8))
    return 301


def hunt(fn: Callable[[], int], rounds: int, warmup: int) -> tuple[str, str, int]:
    """(verdict, figures, rounds measured) for one scenario."""
    measure(fn, warmup)  # caches, free lists, interned strings, thread states
    blocks, objects = measure(fn, rounds)
    measured = rounds
    verdict = "ok"
    if grows(blocks) or grows(objects):
        # Confirm over a longer window: a one-off spike on a noisy machine goes away.
        blocks, objects = measure(fn, 2 * rounds)
        measured += 2 * rounds
        leaking = grows_to_the_end(blocks) or grows_to_the_end(objects)
        verdict = "LEAK" if leaking else "ok (a transient spike)"
    figures = (
        f"blocks {blocks[0]}..{blocks[-1]} ({blocks[-1] - blocks[0]:+d})"
        f"  objects {objects[0]}..{objects[-1]} ({objects[-1] - objects[0]:+d})"
    )
    return verdict, figures, measured


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("scenarios", nargs="*", help=f"some of: {', '.join(SCENARIOS)}")
    args = parser.parse_args()
    names = args.scenarios or list(SCENARIOS)
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    failed = 0
    total_spawns = 0
    start = time.monotonic()
    for name in names:
        fn = SCENARIOS[name]
        verdict, figures, measured = hunt(fn, args.rounds, args.warmup)
        spawns = fn()
        total_spawns += spawns * (args.warmup + measured + 1)
        print(f"{name:<18} {spawns:>4} spawns/round  {figures}  {verdict}", flush=True)
        if verdict == "LEAK":
            failed += 1
            print(top_allocation_sites(fn), flush=True)
    # The canary: a seeded leak of one block per round must be caught, or a clean
    # result above means nothing.
    verdict, figures, _ = hunt(canary_leak_one_block_per_round, args.rounds, args.warmup)
    caught = verdict == "LEAK"
    print(
        f"{'canary':<18} (leaks 1 block/round)  {figures}  {verdict}: "
        + ("caught, as it must be" if caught else "NOT CAUGHT: this hunt can't see leaks")
    )
    print(
        f"leaks: {len(names)} scenarios, {total_spawns:,} spawns, {failed} leaking;"
        f" {time.monotonic() - start:.0f} s"
    )
    return 1 if failed or not caught else 0


if __name__ == "__main__":
    sys.exit(main())
