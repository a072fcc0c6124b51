"""Fault injection: what users' code can do to the engine, and what must still hold.

Each fault must end as a reported task failure (or cancellation) and leave the lane
serving; nothing may crash, hang, lose a task or leak a thread.
"""

from __future__ import annotations

import _thread
import asyncio
import logging
import os
import signal
import sys
import threading
import time
import weakref
from typing import Any

import pytest

import offload

from .support import (
    Reports,
    assert_all_accounted,
    assert_no_lost_work_messages,
    run_python,
    scaled,
    wait_until,
)

LANES = ("threads", "loop", "background")


def raiser_for(lane: str, exc_type: type[BaseException]) -> Any:
    if lane == "threads":

        def sync_raiser() -> None:
            raise exc_type(f"from a {lane} task")

        return sync_raiser

    async def coro_raiser() -> None:
        await asyncio.sleep(0)
        raise exc_type(f"from a {lane} task")

    return coro_raiser


async def lanes_still_serve(rt: offload.Runtime) -> None:
    assert await rt.threads.run(lambda: "t") == "t"

    async def echo(v: str) -> str:
        await asyncio.sleep(0)
        return v

    assert await rt.loop.run(echo, "l") == "l"
    assert await rt.background.run(echo, "b") == "b"


# --- exceptions, KeyboardInterrupt, SystemExit inside tasks ----------------------------


@pytest.mark.parametrize(
    "exc_type", [ValueError, KeyboardInterrupt, SystemExit, GeneratorExit, MemoryError]
)
def test_exceptions_inside_tasks_are_failures_on_every_lane(exc_type: type) -> None:
    reports = Reports()

    async def main() -> None:
        async with offload.Runtime(error_handler=reports) as rt:
            tasks = {lane: getattr(rt, lane).spawn(raiser_for(lane, exc_type)) for lane in LANES}
            assert not await rt.drain(10)
            for lane, task in tasks.items():
                assert task.state == "failed", (lane, task)
                assert type(task.exception()) is exc_type
            # neither the worker thread nor either event loop died
            await lanes_still_serve(rt)
            assert_all_accounted(rt.stats())

    asyncio.run(main())
    assert sorted(name for _, name, _ in reports.calls) == sorted(
        raiser_for(lane, exc_type).__qualname__ for lane in LANES
    )
    assert all(type(exc) is exc_type for _, _, exc in reports.calls)


@pytest.mark.parametrize("exc_type", [ValueError, KeyboardInterrupt, SystemExit])
def test_failure_without_handler_is_logged_once_with_name_id_lane_traceback(
    exc_type: type, offload_log: pytest.LogCaptureFixture
) -> None:
    async def main() -> dict[str, offload.Task[Any]]:
        async with offload.Runtime() as rt:
            tasks = {
                lane: getattr(rt, lane)
                .options(name=f"doomed-{lane}")
                .spawn(raiser_for(lane, exc_type))
                for lane in LANES
            }
            assert not await rt.drain(10)
            await lanes_still_serve(rt)
            return tasks

    tasks = asyncio.run(main())
    failed = [r for r in offload_log.records if r.name == "offload" and "failed" in r.getMessage()]
    assert len(failed) == 3, [r.getMessage() for r in failed]
    for lane, task in tasks.items():
        (record,) = [r for r in failed if f"doomed-{lane}" in r.getMessage()]
        message = record.getMessage()
        assert f"id={task.id}" in message and f"lane={lane}" in message
        assert record.exc_info is not None and record.exc_info[0] is exc_type
        assert record.exc_info[2] is not None  # the traceback


@pytest.mark.parametrize("exc_type", [ValueError, KeyboardInterrupt, SystemExit])
def test_awaiting_caller_gets_the_exception_and_it_is_not_reported_again(exc_type: type) -> None:
    reports = Reports()

    async def main() -> None:
        async with offload.Runtime(error_handler=reports) as rt:
            for lane in LANES:
                with pytest.raises(exc_type):
                    await getattr(rt, lane).run(raiser_for(lane, exc_type))
            await lanes_still_serve(rt)

    asyncio.run(main())
    assert len(reports) == 0


def test_exception_with_broken_str_and_repr_is_still_reported(
    offload_log: pytest.LogCaptureFixture,
) -> None:
    class Nasty(Exception):
        def __str__(self) -> str:
            raise RuntimeError("str() of this exception fails")

        def __repr__(self) -> str:
            raise RuntimeError("repr() too")

    def fail() -> None:
        raise Nasty()

    with offload.Runtime() as rt:
        task = rt.threads.options(name="nasty").spawn(fail)
        assert isinstance(task.exception(timeout=10), Nasty)
        assert rt.threads.spawn(lambda: 1).result(timeout=10) == 1
    assert any("nasty" in r.getMessage() and r.exc_info for r in offload_log.records)


# --- error_handler and done callbacks that raise ------------------------------------------


@pytest.mark.parametrize("handler_exc", [RuntimeError, KeyboardInterrupt, SystemExit])
def test_error_handler_that_raises_is_logged_and_changes_nothing(
    handler_exc: type, offload_log: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    def handler(task: offload.Task[Any], exc: BaseException) -> None:
        seen.append(task.name)
        raise handler_exc("the handler itself is broken")

    async def main() -> None:
        async with offload.Runtime(error_handler=handler) as rt:
            tasks = [
                getattr(rt, lane).options(name=f"f-{lane}").spawn(raiser_for(lane, ValueError))
                for lane in LANES
            ]
            assert not await rt.drain(10)
            assert [t.state for t in tasks] == ["failed"] * 3
            await lanes_still_serve(rt)
            assert_all_accounted(rt.stats())

    asyncio.run(main())
    assert sorted(seen) == ["f-background", "f-loop", "f-threads"]
    logged = [r for r in offload_log.records if "error_handler raised" in r.getMessage()]
    assert len(logged) == 3
    assert all(r.exc_info and r.exc_info[0] is handler_exc for r in logged)


def test_done_callback_that_raises_is_logged_and_others_still_run(
    offload_log: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def bad(task: offload.Task[Any]) -> None:
        calls.append("bad")
        raise KeyError("callback bug")

    with offload.Runtime() as rt:
        gate = threading.Event()
        task = rt.threads.options(name="cb-task").spawn(gate.wait, 10)
        task.add_done_callback(bad)
        task.add_done_callback(lambda t: calls.append("good"))
        gate.set()
        assert task.result(timeout=10) is True
        # callbacks run in the finishing thread, possibly after result() returned here
        assert wait_until(lambda: len(calls) == 2, 10)
        # added after the end: runs at once, its error reported the same way
        task.add_done_callback(bad)
    assert calls == ["bad", "good", "bad"]
    logged = [r for r in offload_log.records if "done-callback" in r.getMessage()]
    assert len(logged) == 2 and all("cb-task" in r.getMessage() for r in logged)


# --- cancellation -------------------------------------------------------------------------


def test_tasks_that_cancel_themselves() -> None:
    async def main() -> None:
        async with offload.Runtime() as rt:
            holder: dict[str, offload.Task[Any]] = {}

            async def via_asyncio() -> None:
                asyncio.current_task().cancel()  # type: ignore[union-attr]
                await asyncio.sleep(10)

            async def via_offload(key: str) -> None:
                await asyncio.sleep(0)
                assert holder[key].cancel() is True
                await asyncio.sleep(10)

            def sync_self_cancel() -> str:
                # a running sync callable can't be interrupted: cancel() says so
                assert wait_until(lambda: "sync" in holder, 5)
                assert holder["sync"].cancel() is False
                return "finished anyway"

            tasks = []
            for lane in ("loop", "background"):
                tasks.append(getattr(rt, lane).spawn(via_asyncio))
                holder[lane] = t = getattr(rt, lane).spawn(via_offload, lane)
                tasks.append(t)
            holder["sync"] = sync = rt.threads.spawn(sync_self_cancel)
            assert not await rt.drain(10)
            assert [t.state for t in tasks] == ["cancelled"] * 4
            assert sync.state == "succeeded" and sync.result() == "finished anyway"
            with pytest.raises(asyncio.CancelledError):
                await tasks[0]
            await lanes_still_serve(rt)
            assert_all_accounted(rt.stats())

    asyncio.run(main())


def test_cancel_storm_from_many_threads() -> None:
    """Thousands of pending, waiting and running tasks, each cancelled by 4 threads at once."""
    n = scaled(1500, 200)
    reports = Reports()

    async def main() -> None:
        async with offload.Runtime(
            threads=2, lanes={"background": {"max_running": 50}}, error_handler=reports
        ) as rt:
            gate = threading.Event()
            blockers = [rt.threads.spawn(gate.wait, 30) for _ in range(2)]
            sync_pending = [rt.threads.spawn(time.sleep, 0) for _ in range(n)]
            loop_running = [rt.loop.spawn(asyncio.sleep, 30) for _ in range(n)]
            bg = [rt.background.spawn(asyncio.sleep, 30) for _ in range(n)]  # 50 run, rest wait
            await asyncio.sleep(0.05)
            everything = sync_pending + loop_running + bg
            results: list[list[bool]] = [[] for _ in range(4)]
            start = threading.Barrier(4)

            def storm(k: int) -> None:
                start.wait()
                order = everything[k::1] if k % 2 else everything[::-1]
                results[k] = [t.cancel() for t in order]

            threads = [threading.Thread(target=storm, args=(k,)) for k in range(4)]
            for t in threads:
                t.start()
            await asyncio.to_thread(lambda: [t.join(60) for t in threads])
            gate.set()
            assert not await rt.drain(30)
            assert all(t.state == "cancelled" for t in everything)
            assert [t.state for t in blockers] == ["succeeded"] * 2
            # a pending sync task is cancelled exactly once: one True among 4 callers
            wins = sum(r.count(True) for r in results)
            assert wins >= len(everything)
            stats = rt.stats()
            assert stats["threads"]["cancelled"] == n
            assert stats["loop"]["cancelled"] == n
            assert stats["background"]["cancelled"] == n
            assert_all_accounted(stats)
            await lanes_still_serve(rt)

    asyncio.run(main())
    assert len(reports) == 0


def test_cancel_storm_racing_a_shutdown() -> None:
    n = scaled(2000, 200)

    async def main() -> None:
        rt = offload.Runtime(threads=2)
        rt.start()
        tasks = [rt.loop.spawn(asyncio.sleep, 0.001 * (i % 7)) for i in range(n)]
        tasks += [rt.threads.spawn(time.sleep, 0.0001) for _ in range(n)]
        tasks += [rt.background.spawn(asyncio.sleep, 0.001) for _ in range(n)]

        def storm() -> None:
            for t in tasks[::3]:
                t.cancel()

        canceller = threading.Thread(target=storm)
        canceller.start()
        left = await rt.shutdown(30)
        await asyncio.to_thread(canceller.join, 30)
        assert not left
        assert all(t.done() for t in tasks)
        assert_all_accounted(rt.stats())
        assert rt._live_tasks() == []

    asyncio.run(main())


# --- spawning from inside: callbacks, children, chains -----------------------------------


def test_done_callback_that_spawns_on_every_lane() -> None:
    async def main() -> None:
        async with offload.Runtime() as rt:
            spawned: list[offload.Task[Any]] = []

            async def coro() -> int:
                await asyncio.sleep(0)
                return 2

            def callback(task: offload.Task[Any]) -> None:
                # runs where the task finished: a worker thread or a loop thread
                spawned.append(rt.threads.spawn(lambda: 1))
                spawned.append(rt.background.spawn(coro))
                spawned.append(rt.loop.spawn(coro))

            for lane, target in (("threads", lambda: 0), ("loop", coro), ("background", coro)):
                getattr(rt, lane).spawn(target).add_done_callback(callback)
            for _ in range(1000):
                if len(spawned) == 9:
                    break
                await asyncio.sleep(0.01)
            assert len(spawned) == 9
            assert not await rt.drain(10)
            assert sorted(t.result() for t in spawned) == [1, 1, 1, 2, 2, 2, 2, 2, 2]
            assert_all_accounted(rt.stats())

    asyncio.run(main())


def test_done_callback_spawning_after_shutdown_is_reported_not_raised(
    offload_log: pytest.LogCaptureFixture,
) -> None:
    rt = offload.Runtime()
    gate = threading.Event()
    task = rt.threads.options(name="late-parent").spawn(gate.wait, 10)
    task.add_done_callback(lambda t: rt.threads.spawn(print, "never"))
    closer = threading.Thread(target=rt.close, args=(10,))
    closer.start()
    assert wait_until(lambda: rt.closed, 5)
    gate.set()
    closer.join(20)
    assert task.state == "succeeded"
    (record,) = [r for r in offload_log.records if "done-callback" in r.getMessage()]
    assert "late-parent" in record.getMessage()
    assert record.exc_info and record.exc_info[0] is offload.Closed


@pytest.mark.parametrize("lane", LANES)
def test_task_that_spawns_1000_children(lane: str) -> None:
    children: list[offload.Task[Any]] = []

    def sync_parent(rt: offload.Runtime) -> int:
        for i in range(1000):
            children.append(rt.threads.spawn(pow, i, 2))
        return len(children)

    async def coro_parent(rt: offload.Runtime) -> int:
        async def child(i: int) -> int:
            await asyncio.sleep(0)
            return i * i

        for i in range(1000):
            children.append(getattr(rt, lane).spawn(child, i))
        return len(children)

    async def main() -> None:
        async with offload.Runtime() as rt:
            if lane == "threads":
                parent = rt.threads.spawn(sync_parent, rt)
            else:
                parent = getattr(rt, lane).spawn(coro_parent, rt)
            assert await parent == 1000
            assert not await rt.drain(30)
            assert [c.result() for c in children] == [i * i for i in range(1000)]
            assert_all_accounted(rt.stats())

    asyncio.run(main())


@pytest.mark.parametrize("lane", LANES)
def test_chain_of_1000_tasks_each_spawning_the_next(lane: str) -> None:
    done = threading.Event()
    depth: list[int] = []

    async def main() -> None:
        async with offload.Runtime() as rt:

            def sync_step(i: int) -> None:
                depth.append(i)
                if i < 1000:
                    rt.threads.spawn(sync_step, i + 1)
                else:
                    done.set()

            async def coro_step(i: int) -> None:
                depth.append(i)
                if i < 1000:
                    getattr(rt, lane).spawn(coro_step, i + 1)
                else:
                    done.set()

            if lane == "threads":
                rt.threads.spawn(sync_step, 1)
            else:
                getattr(rt, lane).spawn(coro_step, 1)
            assert await asyncio.to_thread(done.wait, 30)
            assert not await rt.drain(10)
            assert depth == list(range(1, 1001))

    asyncio.run(main())


# --- the runtime dropped while busy ----------------------------------------------------


def test_runtime_dropped_while_tasks_run_finishes_them_and_is_freed() -> None:
    results: list[int] = []

    def work(i: int) -> None:
        time.sleep(0.001)
        results.append(i)

    def make() -> weakref.ref[offload.Runtime]:
        rt = offload.Runtime(threads=2, idle_timeout=0.05)
        for i in range(50):
            rt.threads.spawn(work, i)
        return weakref.ref(rt)

    ref = make()  # no reference kept, no shutdown
    assert wait_until(lambda: len(results) == 50, 20)
    import gc

    assert wait_until(lambda: (gc.collect(), ref() is None)[1], 10), "the runtime was never freed"


# --- fork -----------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_fork_with_tasks_running_gives_the_child_a_working_runtime() -> None:
    rt = offload.Runtime(threads=4)
    gate = threading.Event()
    stop = threading.Event()
    running = [rt.threads.spawn(gate.wait, 30) for _ in range(3)]
    bg = rt.background.spawn(asyncio.sleep, 0.5, "bg-parent")

    def producer() -> None:  # spawning while the fork happens: engine locks may be held
        while not stop.is_set():
            rt.threads.spawn(int, "1")

    prod = threading.Thread(target=producer)
    prod.start()
    try:
        time.sleep(0.05)
        pid = os.fork()
        if pid == 0:  # the child: only this thread exists here
            code = 1
            try:
                t = rt.threads.spawn(lambda: "child-threads")
                assert t.result(timeout=10) == "child-threads"

                async def coro() -> str:
                    return "child-bg"

                assert rt.background.spawn(coro).result(timeout=10) == "child-bg"
                s = rt.stats()["threads"]
                assert s["running"] == 0 and s["pending"] == 0, s  # fresh registry
                left = rt.close(5)
                assert not left
                code = 0
            except BaseException as exc:  # noqa: BLE001
                print("child failed:", repr(exc), file=sys.stderr, flush=True)
            finally:
                os._exit(code)
        deadline = time.monotonic() + 30
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail("the forked child deadlocked")
            time.sleep(0.02)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        stop.set()
        prod.join(10)
        gate.set()
    # the parent is unaffected
    assert [t.result(timeout=10) for t in running] == [True] * 3
    assert bg.result(timeout=10) == "bg-parent"
    assert not rt.close(10)
    assert_all_accounted(rt.stats())


# --- stuck threads and Ctrl-C ------------------------------------------------------------------


def test_pool_thread_stuck_forever_is_reported_not_waited_for(
    offload_log: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()

    def busy_forever() -> None:  # Python code that never blocks, holding the GIL in turns
        while not release.is_set():
            pass

    async def main() -> set[offload.Task[Any]]:
        rt = offload.Runtime()
        rt.start()
        rt.threads.options(name="stuck-in-wait").spawn(release.wait)
        rt.threads.options(name="stuck-busy").spawn(busy_forever)
        start = time.monotonic()
        left = await rt.shutdown(timeout=0.5)
        assert time.monotonic() - start < 0.5 + 1.0
        return left

    try:
        left = asyncio.run(main())
    finally:
        release.set()
    assert sorted(t.name for t in left) == ["stuck-busy", "stuck-in-wait"]
    text = "\n".join(r.getMessage() for r in offload_log.records)
    assert "stuck-in-wait" in text and "stuck-busy" in text and "still running" in text


@pytest.fixture
def python_sigint_handler() -> Any:
    """Python's own SIGINT handler, whatever this process inherited: a process started in
    the background by a shell without job control ignores SIGINT, and then
    _thread.interrupt_main() does nothing at all."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_while_blocked_in_result_or_a_full_spawn(python_sigint_handler: None) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread")
    rt = offload.Runtime(threads=1, lanes={"threads": {"max_pending": 1, "on_full": "block"}})
    gate = threading.Event()
    first = rt.threads.spawn(gate.wait, 30)
    rt.threads.spawn(gate.wait, 30)  # fills the waiting queue
    try:
        threading.Timer(0.2, _thread.interrupt_main).start()
        with pytest.raises(KeyboardInterrupt):
            first.result()
        threading.Timer(0.2, _thread.interrupt_main).start()
        with pytest.raises(KeyboardInterrupt):
            rt.threads.spawn(print)  # blocked waiting for room
    finally:
        gate.set()
    assert first.result(timeout=10) is True
    assert not rt.close(10)
    stats = rt.stats()
    assert_all_accounted(stats)
    assert stats["threads"]["rejected"] == 1 and stats["threads"]["succeeded"] == 2


# --- interpreter exit, in a child process ----------------------------------------------------

EXIT_SCRIPT = """
import asyncio, logging, sys, threading, time
import offload
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s: %(message)s")
offload.configure(shutdown_timeout={timeout})
forever = threading.Event()

async def ignores_cancel():
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            print("cancel ignored", flush=True)

def busy():
    while True:
        pass

offload.threads.options(name="stuck-wait").spawn(forever.wait)
offload.threads.options(name="stuck-busy").spawn(busy)
offload.background.options(name="deaf-coroutine").spawn(ignores_cancel)
for i in range(200):
    offload.threads.spawn(time.sleep, 0.001)
time.sleep(0.2)
print("main done", flush=True)
"""


@pytest.mark.parametrize("timeout", [1.0])
def test_interpreter_exit_with_stuck_threads_and_a_deaf_coroutine(timeout: float) -> None:
    status, out, elapsed = run_python(EXIT_SCRIPT.format(timeout=timeout), timeout=60)
    assert status == 0, out
    assert "main done" in out
    assert elapsed < timeout + 8, (elapsed, out)  # + interpreter start-up (slow when instrumented)
    for name in ("stuck-wait", "stuck-busy", "deaf-coroutine"):
        assert f"'{name}'" in out and "did not finish" in out, out
    assert_no_lost_work_messages(out)
    assert "Traceback" not in out, out


def test_log_records_of_failures_carry_the_task() -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logging.getLogger("offload").addHandler(handler)
    try:
        with offload.Runtime() as rt:
            task = rt.threads.spawn(raiser_for("threads", ValueError))
            task.exception(timeout=10)
    finally:
        logging.getLogger("offload").removeHandler(handler)
    assert any(getattr(r, "offload_task", None) is task for r in records)
