"""drain and shutdown: wait for what was spawned, refuse new work, cancel what is left,
stop loops and threads, report (never wait forever for) stuck work; and the same at
interpreter exit."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import offload

from .conftest import Arun, MakeRuntime
from .support import (
    WAIT,
    Gate,
    async_wait_until,
    counters,
    lane_names_of,
    records_of,
    run_python,
    wait_until,
)


async def forever(cleaned: list[str], label: str) -> None:
    """A coroutine that only ends by cancellation, noting its cleanup."""
    try:
        await asyncio.sleep(3600)
    finally:
        cleaned.append(label)


def test_drain_waits_for_everything_spawned_so_far(arun: Arun, runtime: MakeRuntime) -> None:
    """drain() returns once every task of every lane has ended: an empty set."""

    async def main() -> None:
        async with runtime() as rt:
            hold = Gate()
            tasks = [
                rt.threads.spawn(hold.wait),
                rt.loop.spawn(hold.async_wait),
                rt.background.spawn(hold.async_wait),
            ]
            asyncio.get_running_loop().call_later(0.02, hold.open)
            assert await rt.drain() == set()
            assert all(t.state == "succeeded" for t in tasks)

    arun(main())


def test_drain_with_a_timeout_returns_the_unfinished_and_leaves_them_running(
    arun: Arun, runtime: MakeRuntime
) -> None:
    """drain(timeout) hands back exactly the tasks still going; they are not cancelled."""

    async def main() -> None:
        async with runtime() as rt:
            hold = Gate()
            done = rt.threads.spawn(int)
            await done
            stuck = {
                rt.threads.spawn(hold.wait),
                rt.loop.spawn(hold.async_wait),
                rt.background.spawn(hold.async_wait),
            }
            assert await rt.drain(0.05) == stuck
            assert not any(t.done() for t in stuck)
            hold.open()
            assert await rt.drain(WAIT) == set()
            assert all(t.state == "succeeded" for t in stuck)

    arun(main())


def test_shutdown_cancels_what_is_left_reports_stuck_work_and_stops_everything(
    arun: Arun, runtime: MakeRuntime, offload_log: pytest.LogCaptureFixture
) -> None:
    """shutdown(timeout): Closed for new work; running coroutines get CancelledError,
    waiting tasks never start, a stuck sync call is reported and not waited for; each
    unfinished task is logged by name and returned; loops stop, idle threads exit."""
    hold, started, cleaned, ran = Gate(), Gate(), [], []

    def stuck_call() -> None:
        started.open()
        hold.wait()

    async def main() -> None:
        rt = runtime(threads=1)
        async with rt:
            finished = rt.threads.spawn(int)
            await finished
            stuck = rt.threads.options(name="stuck-call").spawn(stuck_call)
            waiting = rt.threads.options(name="never-started").spawn(ran.append, "x")
            on_loop = rt.loop.options(name="loop-coro").spawn(forever, cleaned, "loop")
            on_bg = rt.background.options(name="bg-coro").spawn(forever, cleaned, "bg")
            assert await asyncio.to_thread(started.wait)
            await asyncio.sleep(0.01)
            left = await rt.shutdown(1.0)
            assert left == {stuck, waiting, on_loop, on_bg}
            assert rt.closed
            for name, lane in lane_names_of(rt).items():
                target: Any = int if name == "threads" else asyncio.sleep
                with pytest.raises(offload.Closed):
                    lane.spawn(target, 0)
                with pytest.raises(offload.Closed):
                    lane.run(target, 0)
            with pytest.raises(offload.Closed):
                rt.spawn(int)
            assert await async_wait_until(lambda: sorted(cleaned) == ["bg", "loop"])
            assert on_loop.cancelled() and on_bg.cancelled() and waiting.cancelled()
            assert stuck.state == "running" and ran == []
            assert await async_wait_until(lambda: rt.stats()["background"]["loops"]["alive"] == 0)
            assert all(loop.is_closed() for loop in rt.background_loops())
            assert rt.stats()["threads"]["threads"]["alive"] == 1  # the stuck one
            hold.open()
            assert await async_wait_until(lambda: rt.stats()["threads"]["threads"]["alive"] == 0)
            assert stuck.result() is None

    try:
        arun(main())
    finally:
        hold.open()
    warnings = [r.getMessage() for r in records_of(offload_log.records, logging.WARNING)]
    for name in ("stuck-call", "never-started", "loop-coro", "bg-coro"):
        assert sum(name in w and "did not finish" in w for w in warnings) == 1, (name, warnings)
    errors = [r.getMessage() for r in records_of(offload_log.records, logging.ERROR)]
    stuck_reports = [e for e in errors if "stuck-call" in e and "still running" in e]
    assert len(stuck_reports) == 1, errors
    # on a loaded machine the loop thread may also be reported as slow to stop
    assert all(e in stuck_reports or "did not stop in time" in e for e in errors), errors


def test_a_clean_shutdown_returns_nothing_and_logs_nothing(
    arun: Arun, runtime: MakeRuntime, offload_log: pytest.LogCaptureFixture
) -> None:
    """Work that ends within the timeout: shutdown drains it, returns an empty set, logs
    nothing and leaves no loop or thread behind."""

    async def main() -> None:
        rt = runtime()
        async with rt:
            hold = Gate()
            tasks = [
                rt.threads.spawn(hold.wait),
                rt.loop.spawn(hold.async_wait),
                rt.background.spawn(hold.async_wait),
            ]
            asyncio.get_running_loop().call_later(0.02, hold.open)
            assert await rt.shutdown(WAIT) == set()
            assert all(t.state == "succeeded" for t in tasks)
            stats = rt.stats()
            assert stats["threads"]["threads"]["alive"] == 0
            assert stats["background"]["loops"]["alive"] == 0

    arun(main())
    assert [r for r in offload_log.records if r.levelno >= logging.WARNING] == []


def test_new_work_refused_after_shutdown_is_not_counted(arun: Arun, runtime: MakeRuntime) -> None:
    """Spawns refused with Closed leave the stats as they were."""

    async def main() -> None:
        async with runtime() as rt:
            await rt.threads.run(int)
        before = {name: counters(s) for name, s in rt.stats().items()}
        for _ in range(3):
            with pytest.raises(offload.Closed):
                rt.threads.spawn(int)
            with pytest.raises(offload.Closed):
                rt.background.spawn(asyncio.sleep, 0)
        assert {name: counters(s) for name, s in rt.stats().items()} == before

    arun(main())


def test_with_block_shuts_the_runtime_down(loop_kind: str, runtime: MakeRuntime) -> None:
    """`with Runtime() as rt:` drains and closes on exit; threads and loops are gone."""
    cleaned: list[str] = []
    with runtime(shutdown_timeout=1.0) as rt:
        done = rt.threads.spawn(int)
        coro = rt.background.options(name="forever").spawn(forever, cleaned, "bg")
    assert rt.closed
    assert done.state == "succeeded"
    assert wait_until(coro.cancelled) and cleaned == ["bg"]
    assert wait_until(lambda: rt.stats()["threads"]["threads"]["alive"] == 0)
    assert wait_until(lambda: rt.stats()["background"]["loops"]["alive"] == 0)


def test_async_with_makes_the_home_loop_and_shuts_down_on_exit(
    arun: Arun, runtime: MakeRuntime
) -> None:
    """`async with Runtime() as rt:` makes the running loop home and shuts down at exit,
    cancelling coroutines still running there."""
    cleaned: list[str] = []

    async def main() -> offload.Task[Any]:
        rt = runtime(shutdown_timeout=1.0)
        async with rt as entered:
            assert entered is rt and rt.home_loop is asyncio.get_running_loop()
            task = rt.loop.spawn(forever, cleaned, "loop")
        assert rt.closed
        await async_wait_until(task.done)
        return task

    assert arun(main()).cancelled() and cleaned == ["loop"]


EXIT_SCRIPT = """
import asyncio, threading
import uvloop
import offload

rt = offload.Runtime(shutdown_timeout=1, loop_factory={factory})
stuck = threading.Event()
rt.threads.options(name="stuck-job").spawn(stuck.wait)

async def sleepy():
    await asyncio.sleep(3600)

rt.background.options(name="sleepy-coro").spawn(sleepy)
rt.threads.options(name="quick-job").spawn(int).result(10)
print("main done", flush=True)
"""


def test_a_runtime_never_shut_down_is_shut_down_at_interpreter_exit(loop_kind: str) -> None:
    """At exit, an open runtime is shut down within its shutdown_timeout: the process ends
    (a stuck sync task doesn't hold it) and the unfinished tasks are named on stderr."""
    factory = "uvloop.new_event_loop" if loop_kind == "uvloop" else "asyncio.new_event_loop"
    proc = run_python(EXIT_SCRIPT.format(factory=factory), timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "main done"
    lines = proc.stderr.splitlines()
    assert any("stuck-job" in line and "did not finish" in line for line in lines), proc.stderr
    assert any("sleepy-coro" in line and "did not finish" in line for line in lines), proc.stderr
    assert "quick-job" not in proc.stderr
    assert "Task was destroyed" not in proc.stderr and "Traceback" not in proc.stderr
