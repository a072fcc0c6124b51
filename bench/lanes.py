"""Per-lane throughput: each offload lane against the usual ways of doing the same work.

Every sample builds its own runtime / executor / loop, runs an untimed warm-up of a
tenth of the work, then times `n` trivial tasks from first submit to all done.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from time import perf_counter

import aiojobs
import anyio
import anyio.from_thread
import anyio.to_thread
import greenletio
from asyncer import asyncify
from common import Benchmark, Sample, f, inc, noop, rate, run_benchmark

import offload

AWAITERS = 200  # concurrent awaiters in the `run` benchmarks
PROCESSES = 2  # process pool size on both sides (the machine has 2 cores)


# --- loop lane: spawn n coroutines on the running loop, wait for all ------------------
Batch = Callable[[int], Awaitable[None]]


def _in_loop(
    n: int, burst: int, setup: Callable[[contextlib.AsyncExitStack], Awaitable[Batch]]
) -> Sample:
    async def main() -> float:
        async with contextlib.AsyncExitStack() as stack:
            batch = await setup(stack)
            await batch(min(burst, n // 10))
            start = perf_counter()
            for _ in range(n // burst):
                await batch(burst)
            return rate(n // burst * burst, start)

    return lambda: asyncio.run(main())


def loop_lane(n: int, burst: int) -> list[tuple[str, Sample]]:
    """Spawn `burst` coroutines, wait for them all; n // burst times."""

    async def offload_spawn(stack: contextlib.AsyncExitStack) -> Batch:
        spawn = (await stack.enter_async_context(offload.Runtime())).loop.spawn

        async def batch(k: int) -> None:
            tasks = [spawn(noop()) for _ in range(k)]
            for task in tasks:
                if not task.done():
                    await task

        return batch

    async def create_task(stack: contextlib.AsyncExitStack) -> Batch:
        async def batch(k: int) -> None:
            refs: set[asyncio.Task[None]] = set()
            for _ in range(k):
                task = asyncio.create_task(noop())
                refs.add(task)
                task.add_done_callback(refs.discard)
            while refs:
                await asyncio.sleep(0)

        return batch

    async def aiojobs_spawn(stack: contextlib.AsyncExitStack) -> Batch:
        async def batch(k: int) -> None:
            scheduler = aiojobs.Scheduler(limit=None, pending_limit=0)
            for _ in range(k):
                await scheduler.spawn(noop())
            await scheduler.wait_and_close()

        return batch

    async def anyio_start_soon(stack: contextlib.AsyncExitStack) -> Batch:
        async def batch(k: int) -> None:
            async with anyio.create_task_group() as tg:
                for _ in range(k):
                    tg.start_soon(noop)

        return batch

    return [
        ("offload loop.spawn", _in_loop(n, burst, offload_spawn)),
        ("create_task + refs + callback", _in_loop(n, burst, create_task)),
        ("aiojobs Scheduler.spawn", _in_loop(n, burst, aiojobs_spawn)),
        ("anyio TaskGroup.start_soon", _in_loop(n, burst, anyio_start_soon)),
    ]


# --- thread lane: AWAITERS coroutines each awaiting calls of f() in a thread ---------
Call = Callable[[], Awaitable[object]]
#: Sets a contender up inside the running loop (its runtime/executor entered on the
#: stack, closed after the sample, untimed) and returns the call each awaiter repeats.
Setup = Callable[[contextlib.AsyncExitStack], Awaitable[Call]]


def _awaiters(n: int, setup: Setup) -> Sample:
    async def batch(call: Call, k: int) -> None:
        async def awaiter() -> None:
            for _ in range(k // AWAITERS):
                await call()

        await asyncio.gather(*[awaiter() for _ in range(AWAITERS)])

    async def main() -> float:
        async with contextlib.AsyncExitStack() as stack:
            call = await setup(stack)
            await batch(call, n // 10)
            start = perf_counter()
            await batch(call, n)
            return rate(n, start)

    return lambda: asyncio.run(main())


def _plain(call: Call) -> Setup:
    async def setup(stack: contextlib.AsyncExitStack) -> Call:
        return call

    return setup


@contextlib.contextmanager
def _runtime(**options: object) -> Iterator[offload.Runtime]:
    rt = offload.Runtime(**options)
    try:
        yield rt
    finally:
        rt.close(30)


def thread_run(n: int) -> list[tuple[str, Sample]]:
    async def offload_run(stack: contextlib.AsyncExitStack) -> Call:
        rt = await stack.enter_async_context(offload.Runtime())
        return functools.partial(rt.threads.run, f)

    async def run_in_executor(stack: contextlib.AsyncExitStack) -> Call:
        executor = stack.enter_context(ThreadPoolExecutor(32))  # offload's default size
        return functools.partial(asyncio.get_running_loop().run_in_executor, executor, f)

    return [
        ("offload await threads.run", _awaiters(n, offload_run)),
        ("asyncio.to_thread", _awaiters(n, _plain(functools.partial(asyncio.to_thread, f)))),
        ("run_in_executor(ThreadPoolExecutor)", _awaiters(n, run_in_executor)),
        (
            "anyio to_thread.run_sync",
            _awaiters(n, _plain(functools.partial(anyio.to_thread.run_sync, f))),
        ),
        ("asyncer asyncify", _awaiters(n, _plain(asyncify(f)))),
    ]


@contextlib.contextmanager
def one_cpu() -> Iterator[None]:
    """Pin every thread of this process (and so the threads they start) to one CPU."""
    everything = os.sched_getaffinity(0)
    cpu = {min(everything)}

    def pin(cpus: set[int]) -> None:
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError):  # a thread that just exited
                os.sched_setaffinity(int(tid), cpus)

    pin(cpu)
    try:
        yield
    finally:
        pin(everything)


def _pinned(sample: Sample) -> Sample:
    def run() -> float:
        with one_cpu():
            return sample()

    return run


# --- thread lane: fire and forget n calls from a plain thread, then wait for all -----
def thread_spawn(n: int) -> list[tuple[str, Sample]]:
    def offload_spawn() -> float:
        with _runtime() as rt:
            spawn = rt.threads.spawn
            for _ in range(n // 10):
                spawn(f)
            rt.drain_sync()
            start = perf_counter()
            for _ in range(n):
                spawn(f)
            rt.drain_sync()
            return rate(n, start)

    def executor_submit() -> float:
        with ThreadPoolExecutor(32) as executor:
            wait([executor.submit(f) for _ in range(n // 10)])
            start = perf_counter()
            wait([executor.submit(f) for _ in range(n)])
            return rate(n, start)

    return [
        ("offload threads.spawn", offload_spawn),
        ("ThreadPoolExecutor.submit", executor_submit),
    ]


# --- background lane: submit n coroutines from a plain thread to a loop thread --------
def background(n: int) -> list[tuple[str, Sample]]:
    def offload_spawn() -> float:
        with _runtime() as rt:
            spawn = rt.background.spawn
            for task in [spawn(noop()) for _ in range(n // 10)]:
                task.result(60)
            start = perf_counter()
            for task in [spawn(noop()) for _ in range(n)]:
                task.result(60)
            return rate(n, start)

    def threadsafe() -> float:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        try:
            submit = asyncio.run_coroutine_threadsafe
            for fut in [submit(noop(), loop) for _ in range(n // 10)]:
                fut.result(60)
            start = perf_counter()
            for fut in [submit(noop(), loop) for _ in range(n)]:
                fut.result(60)
            return rate(n, start)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()

    def portal() -> float:
        with anyio.from_thread.start_blocking_portal() as portal:
            futures: list[Future[None]] = [portal.start_task_soon(noop) for _ in range(n // 10)]
            for fut in futures:
                fut.result(60)
            start = perf_counter()
            futures = [portal.start_task_soon(noop) for _ in range(n)]
            for fut in futures:
                fut.result(60)
            return rate(n, start)

    def greenlet_await() -> float:
        # greenletio runs each coroutine to completion on a private loop in the calling
        # thread: the same work, but the caller waits for each one in turn.
        result: list[float] = []

        def producer() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            for _ in range(n // 10):
                greenletio.await_(noop())
            start = perf_counter()
            for _ in range(n):
                greenletio.await_(noop())
            result.append(rate(n, start))
            greenletio.core.bridge.stop()
            loop.close()

        thread = threading.Thread(target=producer)  # its own thread: a fresh bridge loop
        thread.start()
        thread.join()
        return result[0]

    return [
        ("offload background.spawn", offload_spawn),
        ("run_coroutine_threadsafe", threadsafe),
        ("anyio BlockingPortal.start_task_soon", portal),
        ("greenletio await_", greenlet_await),
    ]


# --- processes lane: small tasks (x + 1) to show batching -----------------------------
def processes_unavailable() -> str | None:
    """Why the processes lane can't be benchmarked yet, or None if it works."""
    log = logging.getLogger("offload")
    level = log.level
    log.setLevel(logging.CRITICAL)  # a failing probe would log a traceback
    try:
        with _runtime(processes=PROCESSES) as rt:
            got = rt.processes.spawn(inc, 1).result(60)
            if got != 2:
                return f"processes.spawn(inc, 1) returned {got!r}"
    except Exception as exc:  # noqa: BLE001 (any failure means: not ready yet)
        return f"{type(exc).__name__}: {exc}"
    finally:
        log.setLevel(level)
    return None


def process_run(n: int) -> list[tuple[str, Sample]]:
    async def offload_run(stack: contextlib.AsyncExitStack) -> Call:
        rt = await stack.enter_async_context(offload.Runtime(processes=PROCESSES))
        return functools.partial(rt.processes.run, inc, 1)

    async def run_in_executor(stack: contextlib.AsyncExitStack) -> Call:
        executor = stack.enter_context(ProcessPoolExecutor(PROCESSES))
        return functools.partial(asyncio.get_running_loop().run_in_executor, executor, inc, 1)

    return [
        ("offload await processes.run", _awaiters(n, offload_run)),
        ("run_in_executor(ProcessPoolExecutor)", _awaiters(n, run_in_executor)),
    ]


def process_spawn(n: int) -> list[tuple[str, Sample]]:
    def offload_spawn() -> float:
        with _runtime(processes=PROCESSES) as rt:
            spawn = rt.processes.spawn
            for i in range(n // 10):
                spawn(inc, i)
            rt.drain_sync()
            start = perf_counter()
            for i in range(n):
                spawn(inc, i)
            rt.drain_sync()
            return rate(n, start)

    def executor_submit() -> float:
        with ProcessPoolExecutor(PROCESSES) as executor:
            wait([executor.submit(inc, i) for i in range(n // 10)])
            start = perf_counter()
            wait([executor.submit(inc, i) for i in range(n)])
            return rate(n, start)

    return [
        ("offload processes.spawn", offload_spawn),
        ("ProcessPoolExecutor.submit", executor_submit),
    ]


def run(rounds: int, scale: float) -> list[Benchmark]:
    def size(n: int) -> int:
        return max(AWAITERS * 10, int(n * scale) // (AWAITERS * 10) * AWAITERS * 10)

    out = [
        run_benchmark(
            "loop_spawn",
            "loop lane: spawn + wait, one burst",
            "tasks/s",
            loop_lane(size(50_000), size(50_000)),
            rounds,
        ),
        run_benchmark(
            "loop_spawn_bursts",
            "loop lane: spawn + wait, bursts of 100",
            "tasks/s",
            loop_lane(size(50_000), 100),
            rounds,
        ),
        run_benchmark(
            "thread_run",
            f"thread lane: await run, {AWAITERS} awaiters",
            "calls/s",
            thread_run(size(20_000)),
            rounds,
        ),
        run_benchmark(
            "thread_run_1cpu",
            f"thread lane: await run, {AWAITERS} awaiters, pinned to 1 CPU",
            "calls/s",
            [(name, _pinned(sample)) for name, sample in thread_run(size(20_000))[:2]],
            rounds,
            note="what this 2-CPU machine leaves when a neighbour keeps one CPU busy",
        ),
        run_benchmark(
            "thread_spawn",
            "thread lane: fire and forget + wait",
            "tasks/s",
            thread_spawn(size(100_000)),
            rounds,
        ),
        run_benchmark(
            "background_spawn",
            "background lane: submit from a plain thread",
            "tasks/s",
            background(size(20_000)),
            rounds,
        ),
    ]
    why = processes_unavailable()
    if why is not None:
        print(
            f"\n== processes lane: SKIPPED, offload.Runtime().processes does not work yet ({why})"
        )
        return out
    out += [
        run_benchmark(
            "process_run",
            f"processes lane: await run(x + 1), {AWAITERS} awaiters",
            "calls/s",
            process_run(size(10_000)),
            rounds,
        ),
        run_benchmark(
            "process_spawn",
            "processes lane: spawn(x + 1) + wait",
            "tasks/s",
            process_spawn(size(10_000)),
            rounds,
        ),
    ]
    return out
