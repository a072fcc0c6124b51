"""The lanes: `loop` (the caller's loop, else the home loop, else background),
`background` (N dedicated loop threads) and `threads` (the C pool, with its size,
minimum and idle timeout)."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import weakref
from typing import Any

import pytest
import uvloop

import offload

from .conftest import Arun, MakeRuntime
from .support import WAIT, Gate, Peak, other_pool_workers, pool_workers, run_loop, wait_until


async def here() -> tuple[int, asyncio.AbstractEventLoop]:
    """Where a coroutine runs: its thread and its loop."""
    await asyncio.sleep(0)
    return threading.get_ident(), asyncio.get_running_loop()


def os_thread_name() -> str:
    """The OS name of the calling thread (pool workers are named by the engine)."""
    with open(f"/proc/self/task/{threading.get_native_id()}/comm") as f:
        return f.read().strip()


def test_loop_lane_runs_on_each_callers_own_loop(arun: Arun, runtime: MakeRuntime) -> None:
    """Two loops in two threads spawning on rt.loop each get their coroutine back on their
    own loop."""
    rt = runtime()

    async def spawn_here() -> tuple[Any, ...]:
        task = rt.loop.spawn(here)
        assert task.lane == "loop"
        return await task, (threading.get_ident(), asyncio.get_running_loop())

    other: list[Any] = []
    thread = threading.Thread(target=lambda: other.append(run_loop("asyncio", spawn_here())))
    thread.start()
    ran_at, caller = arun(spawn_here())
    thread.join(WAIT)
    assert ran_at == caller
    assert other[0][0] == other[0][1] and other[0][0] != caller


@pytest.mark.parametrize("how", ["start()", "async with"])
def test_loop_lane_from_a_thread_uses_the_home_loop(
    arun: Arun, runtime: MakeRuntime, how: str
) -> None:
    """With a home loop (rt.start() or `async with rt`), threads without a loop send
    coroutines there."""

    async def main() -> None:
        rt = runtime()
        if how == "start()":
            rt.start()
        else:
            await rt.__aenter__()
        loop = asyncio.get_running_loop()
        assert rt.home_loop is loop
        from_thread = await asyncio.to_thread(rt.loop.spawn, here)
        plain: list[offload.Task[Any]] = []
        thread = threading.Thread(target=lambda: plain.append(rt.spawn(here())))
        thread.start()
        await asyncio.to_thread(thread.join, WAIT)
        for task in (from_thread, plain[0]):
            assert task.lane == "loop"
            assert await task == (threading.get_ident(), loop)
        assert not await rt.shutdown(WAIT)

    arun(main())


def test_loop_lane_without_a_home_loop_falls_back_to_background(
    loop_kind: str, runtime: MakeRuntime
) -> None:
    """No running loop and no home loop: rt.loop sends the coroutine to a background loop."""
    rt = runtime()
    task = rt.loop.spawn(here)
    assert task.lane == "background"
    thread_id, loop = task.result(WAIT)
    assert thread_id != threading.get_ident() and loop in rt.background_loops()


def test_loop_lane_after_the_home_loop_closed_falls_back_to_background(
    loop_kind: str, runtime: MakeRuntime
) -> None:
    """Once the home loop is closed, it is no longer used (nor reported as home_loop)."""
    rt = runtime()

    async def start() -> None:
        rt.start()

    run_loop(loop_kind, start())
    assert rt.home_loop is None
    task = rt.loop.spawn(here)
    assert task.lane == "background"
    assert task.result(WAIT)[1] in rt.background_loops()


def test_background_runs_on_a_dedicated_loop_thread(arun: Arun, runtime: MakeRuntime) -> None:
    """rt.background: another thread, the runtime's own loop, made by loop_factory."""

    async def main() -> None:
        async with runtime() as rt:
            me = threading.get_ident()
            thread_id, loop = await rt.background.spawn(here)
            assert thread_id != me and loop is not asyncio.get_running_loop()
            assert rt.background_loops() == [loop]
            is_uvloop = isinstance(loop, uvloop.Loop)
            assert is_uvloop == isinstance(asyncio.get_running_loop(), uvloop.Loop)

            async def thread_name() -> str:
                return threading.current_thread().name

            assert await rt.background.run(thread_name) == "offload-background-0"

    arun(main())


def test_background_loops_option_spreads_coroutines_over_several_loops(
    loop_kind: str, runtime: MakeRuntime
) -> None:
    """background_loops=3: three loop threads, and spawned coroutines use all of them."""
    rt = runtime(background_loops=3)
    tasks = [rt.background.spawn(here) for _ in range(9)]
    places = {task.result(WAIT) for task in tasks}
    threads = {thread_id for thread_id, _ in places}
    loops = {id(loop) for _, loop in places}
    assert len(threads) == 3 and len(loops) == 3
    assert {id(loop) for loop in rt.background_loops()} == loops
    assert rt.stats()["background"]["loops"] == {"alive": 3, "max": 3}
    assert not rt.close(WAIT)
    assert rt.stats()["background"]["loops"]["alive"] == 0
    assert all(loop.is_closed() for _, loop in places)


def test_threads_lane_runs_sync_callables_on_pool_threads(runtime: MakeRuntime) -> None:
    """rt.threads runs a sync callable on a pool thread named offload-worker."""
    rt = runtime()
    thread_id, name = rt.threads.spawn(lambda: (threading.get_ident(), os_thread_name())).result(
        WAIT
    )
    assert thread_id != threading.get_ident()
    assert name == "offload-worker"


def test_threads_option_is_the_pool_size(runtime: MakeRuntime) -> None:
    """threads=3: never more than 3 sync tasks at once, nor more than 3 pool threads."""
    others = other_pool_workers()
    rt = runtime(threads=3)
    hold, peak = Gate(), Peak()

    def work() -> None:
        with peak:
            hold.wait()

    tasks = [rt.threads.spawn(work) for _ in range(9)]
    assert wait_until(lambda: peak.now == 3)
    assert not wait_until(lambda: peak.now > 3, timeout=0.2)
    stats = rt.stats()["threads"]
    assert (stats["running"], stats["pending"]) == (3, 6)
    assert stats["threads"]["alive"] == 3 and stats["threads"]["max"] == 3
    assert pool_workers() - others == 3
    hold.open()
    assert all(task.result(WAIT) is None for task in tasks)
    assert peak.max == 3 and peak.entered == 9


def test_idle_threads_beyond_min_threads_exit(runtime: MakeRuntime) -> None:
    """idle_timeout: idle workers exit down to min_threads, which stay; work still runs."""
    others = other_pool_workers()
    rt = runtime(threads=4, min_threads=1, idle_timeout=0.05)
    hold, peak = Gate(), Peak()

    def work() -> None:
        with peak:
            hold.wait()

    tasks = [rt.threads.spawn(work) for _ in range(4)]
    assert wait_until(lambda: peak.now == 4)
    assert pool_workers() - others == 4
    hold.open()
    for task in tasks:
        task.result(WAIT)
    assert wait_until(lambda: rt.stats()["threads"]["threads"]["alive"] == 1)
    assert wait_until(lambda: pool_workers() - others == 1)
    assert not wait_until(lambda: pool_workers() - others != 1, timeout=0.3)
    threads = rt.stats()["threads"]["threads"]
    assert (threads["alive"], threads["max"]) == (1, 4)
    assert rt.threads.spawn(lambda: "still served").result(WAIT) == "still served"


def test_all_idle_threads_exit_with_min_threads_zero(runtime: MakeRuntime) -> None:
    """min_threads=0: an idle pool shrinks to no thread at all and regrows on demand."""
    others = other_pool_workers()
    rt = runtime(threads=2, min_threads=0, idle_timeout=0.05)
    assert rt.threads.spawn(lambda: 1).result(WAIT) == 1
    assert wait_until(lambda: rt.stats()["threads"]["threads"]["alive"] == 0)
    assert wait_until(lambda: pool_workers() - others == 0)
    assert rt.threads.spawn(lambda: 2).result(WAIT) == 2


def test_closed_loops_are_released(loop_kind: str, runtime: MakeRuntime) -> None:
    """Loops that used the runtime and then closed are not kept alive by it (nor their
    wakeup file descriptors)."""
    rt = runtime()
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def short_lived() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        await rt.loop.spawn(asyncio.sleep, 0)
        await rt.threads.run(int)

    run_loop(loop_kind, short_lived())
    fds_before = len(os.listdir("/proc/self/fd"))
    for _ in range(10):
        run_loop(loop_kind, short_lived())
    gc.collect()
    assert [ref() for ref in loops[1:]] == [None] * 10
    assert len(os.listdir("/proc/self/fd")) <= fds_before
