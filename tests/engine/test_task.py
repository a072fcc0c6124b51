"""offload.Task: identity, states, cancel, result/exception from threads, done
callbacks, and `await task` from any event loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import uvloop

import offload

from .conftest import Arun, MakeRuntime
from .support import WAIT, Gate, run_loop, wait_until


def test_ids_are_unique_across_runtimes(runtime: MakeRuntime) -> None:
    """Task ids never repeat in a process, whichever runtime made the task."""
    first, second = runtime(), runtime()
    tasks = [rt.threads.spawn(int) for _ in range(50) for rt in (first, second)]
    ids = [t.id for t in tasks]
    assert len(set(ids)) == len(ids)
    assert all(isinstance(i, int) for i in ids)
    assert ids == sorted(ids)
    for t in tasks:
        t.result(WAIT)


def test_states_of_a_sync_task_pending_running_succeeded(runtime: MakeRuntime) -> None:
    """A sync task waits for a slot (pending), runs (running), then succeeds."""
    rt = runtime(threads=1)
    hold, started = Gate(), Gate()

    def first() -> None:
        started.open()
        hold.wait()

    a = rt.threads.spawn(first)
    b = rt.threads.spawn(lambda: "b")
    assert started.wait()
    assert (a.state, b.state) == ("running", "pending")
    assert not a.done() and not b.done()
    hold.open()
    assert b.result(WAIT) == "b"
    assert (a.state, b.state) == ("succeeded", "succeeded")
    assert a.done() and not a.cancelled()


def test_failed_and_cancelled_states(runtime: MakeRuntime) -> None:
    """A raising task ends failed; a pending task cancelled ends cancelled."""
    rt = runtime(threads=1, error_handler=lambda task, exc: None)
    hold = Gate()
    blocker = rt.threads.spawn(hold.wait)
    waiting = rt.threads.spawn(lambda: 1)
    failing = rt.threads.spawn(lambda: 1 / 0)
    assert waiting.cancel() is True
    assert (waiting.state, waiting.done(), waiting.cancelled()) == ("cancelled", True, True)
    hold.open()
    assert isinstance(failing.exception(WAIT), ZeroDivisionError)
    assert (failing.state, failing.done(), failing.cancelled()) == ("failed", True, False)
    assert blocker.result(WAIT) is True


def test_coroutine_states_and_cancel(loop_kind: str, runtime: MakeRuntime) -> None:
    """A background coroutine goes pending -> running -> cancelled when cancelled while running."""
    rt = runtime()
    started, seen = Gate(), []

    async def sleeper() -> None:
        started.open()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    task = rt.background.spawn(sleeper)
    assert task.state in ("pending", "running")
    assert started.wait()
    assert task.state == "running"
    assert task.cancel() is True
    assert wait_until(task.done)
    assert task.state == "cancelled" and seen == ["cancelled"]
    assert task.cancel() is False


def test_cancel_return_values(runtime: MakeRuntime) -> None:
    """cancel(): True for a pending task (it never runs), False for a running sync call
    (it finishes) and for a finished task."""
    rt = runtime(threads=1)
    hold, started, ran = Gate(), Gate(), []

    def running() -> str:
        started.open()
        hold.wait()
        return "finished"

    a = rt.threads.spawn(running)
    b = rt.threads.spawn(ran.append, "b")
    assert started.wait()
    assert b.cancel() is True and b.cancelled()
    assert a.cancel() is False
    hold.open()
    assert a.result(WAIT) == "finished" and a.state == "succeeded"
    assert a.cancel() is False and b.cancel() is False
    assert ran == []


def test_result_and_exception_from_other_threads(runtime: MakeRuntime) -> None:
    """Many threads block in result()/exception() on one task and all get its outcome."""
    rt = runtime(error_handler=lambda task, exc: None)
    hold = Gate()

    def value() -> str:
        hold.wait()
        return "value"

    def boom() -> None:
        hold.wait()
        raise KeyError("boom")

    ok, bad = rt.threads.spawn(value), rt.threads.spawn(boom)
    results: list[Any] = []
    lock = threading.Lock()

    def waiter() -> None:
        got = (ok.result(WAIT), ok.exception(WAIT), repr(bad.exception(WAIT)))
        try:
            bad.result(WAIT)
        except KeyError as exc:
            got += (repr(exc),)
        with lock:
            results.append(got)

    threads = [threading.Thread(target=waiter) for _ in range(8)]
    for t in threads:
        t.start()
    hold.open()
    for t in threads:
        t.join(WAIT)
    assert results == [("value", None, "KeyError('boom')", "KeyError('boom')")] * 8


def test_result_timeout_raises_and_the_task_keeps_running(runtime: MakeRuntime) -> None:
    """result(timeout) on an unfinished task raises TimeoutError; the task is unaffected."""
    rt = runtime()
    hold = Gate()
    task = rt.threads.spawn(lambda: hold.wait() and "late")
    with pytest.raises(TimeoutError):
        task.result(0.01)
    with pytest.raises(TimeoutError):
        task.exception(0)
    assert not task.done()
    hold.open()
    assert task.result(WAIT) == "late"


def test_result_and_exception_of_a_cancelled_task_raise_cancelled_error(
    runtime: MakeRuntime,
) -> None:
    """A cancelled task has no result: result() and exception() raise CancelledError."""
    rt = runtime(threads=1)
    hold = Gate()
    rt.threads.spawn(hold.wait)
    task = rt.threads.spawn(int)
    task.cancel()
    hold.open()
    with pytest.raises(asyncio.CancelledError):
        task.result(WAIT)
    with pytest.raises(asyncio.CancelledError):
        task.exception(WAIT)


def test_result_and_exception_refuse_to_block_an_event_loop(
    arun: Arun, runtime: MakeRuntime
) -> None:
    """On an event-loop thread an unfinished task's result()/exception() raise at once;
    a finished task's outcome is returned."""

    async def main() -> None:
        async with runtime() as rt:
            hold = Gate()
            task = rt.threads.spawn(hold.wait)
            with pytest.raises(RuntimeError, match="await task"):
                task.result(WAIT)
            with pytest.raises(RuntimeError, match="await task"):
                task.exception(WAIT)
            hold.open()
            assert await task is True
            assert task.result() is True and task.exception() is None

    arun(main())


def test_done_callbacks_run_once_in_the_finishing_thread(
    loop_kind: str, runtime: MakeRuntime
) -> None:
    """add_done_callback(fn): fn(task) once when it ends, on the thread that finished it;
    added after the end, it runs at once; remove_done_callback() unregisters."""
    rt = runtime()
    hold = Gate()
    calls: list[tuple[str, offload.Task[Any], int]] = []

    def note(label: str) -> Any:
        return lambda task: calls.append((label, task, threading.get_ident()))

    async def coro() -> int:
        await hold.async_wait()
        return threading.get_ident()

    sync = rt.threads.spawn(lambda: hold.wait() and threading.get_ident())
    bg = rt.background.spawn(coro)
    first, second, removed = note("first"), note("second"), note("removed")
    for task in (sync, bg):
        task.add_done_callback(first)
        task.add_done_callback(second)
        task.add_done_callback(removed)
        assert task.remove_done_callback(removed) == 1
    hold.open()
    sync_thread, bg_thread = sync.result(WAIT), bg.result(WAIT)
    assert wait_until(lambda: len(calls) == 4)
    assert sorted((label, task.id, tid) for label, task, tid in calls) == sorted(
        [
            ("first", sync.id, sync_thread),
            ("second", sync.id, sync_thread),
            ("first", bg.id, bg_thread),
            ("second", bg.id, bg_thread),
        ]
    )
    assert [label for label, task, _ in calls if task is sync] == ["first", "second"]
    sync.add_done_callback(note("late"))
    assert calls[-1][:2] == ("late", sync) and calls[-1][2] == threading.get_ident()


@pytest.mark.parametrize("lane", ["threads", "background", "loop"])
def test_await_from_its_own_and_other_loops(arun: Arun, runtime: MakeRuntime, lane: str) -> None:
    """A task can be awaited from the caller's loop and, at the same time, from another
    loop running in another thread (and from a second kind of loop)."""
    other_loop_results: list[Any] = []

    async def work(hold: Gate) -> str:
        await hold.async_wait()
        return "value"

    async def main() -> None:
        async with runtime() as rt:
            hold = Gate()
            if lane == "threads":
                task = rt.threads.spawn(lambda: hold.wait() and "value")
            else:
                task = {"loop": rt.loop, "background": rt.background}[lane].spawn(work, hold)

            async def await_it() -> Any:
                return await task

            def in_other_loops() -> None:
                for kind in ("asyncio", "uvloop"):
                    other_loop_results.append(run_loop(kind, await_it(), WAIT))

            other = threading.Thread(target=in_other_loops)
            other.start()
            local = asyncio.ensure_future(await_it())
            await asyncio.sleep(0.01)
            hold.open()
            assert await local == "value"
            await asyncio.to_thread(other.join, WAIT)
            assert other_loop_results == ["value", "value"]
            assert await task == "value"

    arun(main())


def test_await_a_failed_task_raises_its_exception_each_time(
    arun: Arun, runtime: MakeRuntime
) -> None:
    """`await task` of a failed task raises its exception, again on a second await."""

    async def main() -> None:
        async with runtime(error_handler=lambda task, exc: None) as rt:

            async def boom() -> None:
                raise LookupError("boom")

            task = rt.background.spawn(boom)
            for _ in range(2):
                with pytest.raises(LookupError, match="boom"):
                    await task
            assert task.state == "failed"

    arun(main())


def test_a_loop_started_after_the_task_can_await_it(runtime: MakeRuntime, loop_kind: str) -> None:
    """A loop-lane task started on one loop can be awaited by a loop that only begins
    after the task started."""
    rt = runtime()
    hold = Gate()

    async def work() -> int:
        await hold.async_wait()
        return 42

    task = rt.loop.spawn(work)  # no loop here, no home loop: a background loop
    assert wait_until(lambda: task.state == "running")

    async def later() -> int:
        asyncio.get_running_loop().call_later(0.01, hold.open)
        return await task

    assert run_loop(loop_kind, later(), WAIT) == 42


def test_queue_wait_run_time_and_age(arun: Arun, runtime: MakeRuntime) -> None:
    """queue_wait/run_time are None until known, then non-negative seconds; age grows."""

    async def main() -> None:
        async with runtime(threads=1) as rt:
            hold = Gate()
            rt.threads.spawn(hold.wait)
            task = rt.threads.spawn(int)
            assert task.queue_wait is None and task.run_time is None
            assert task.age >= 0
            hold.open()
            await task
            assert task.queue_wait is not None and task.queue_wait >= 0
            assert task.run_time is not None and task.run_time >= 0
            assert task.age >= task.queue_wait

    arun(main())


def test_repr_names_the_task(runtime: MakeRuntime) -> None:
    """repr(task) shows id, name, lane and state."""
    rt = runtime()
    task = rt.threads.options(name="report").spawn(int)
    task.result(WAIT)
    assert repr(task) == f"<offload.Task {task.id} 'report' lane=threads state=succeeded>"


def loop_whose_add_reader_lets_the_task_finish(
    kind: str, task: list[offload.Task[Any]], gate: Gate
) -> asyncio.AbstractEventLoop:
    """A loop whose add_reader(), which offload calls the first time it meets the loop,
    lets other threads run until the awaited task has ended: what any Python code there
    (or a GIL switch) may do on a busy machine."""
    base: Any = uvloop.Loop if kind == "uvloop" else asyncio.SelectorEventLoop

    class Hooked(base):  # type: ignore[misc, valid-type]
        def add_reader(self, fd: Any, callback: Any, *args: Any) -> Any:
            gate.open()
            wait_until(lambda: bool(task) and task[0].done())
            return super().add_reader(fd, callback, *args)

    loop: asyncio.AbstractEventLoop = Hooked()
    return loop


def test_await_on_a_new_loop_never_misses_the_end_of_the_task(
    loop_kind: str, runtime: MakeRuntime
) -> None:
    """`await task` as the first offload call on a loop: a task ending while offload hooks
    up to that loop still wakes the awaiter."""
    rt = runtime()
    gate = Gate()
    box: list[offload.Task[Any]] = []

    async def main() -> Any:
        box.append(rt.threads.spawn(gate.wait))
        return await asyncio.wait_for(_await(box[0]), 2.0)

    loop = loop_whose_add_reader_lets_the_task_finish(loop_kind, box, gate)
    try:
        assert loop.run_until_complete(main()) is True
    finally:
        loop.close()


async def _await(task: offload.Task[Any]) -> Any:
    return await task


def test_task_is_subscriptable_like_its_stub_says() -> None:
    """offload.Task[int] works at runtime, as the type stubs promise."""
    alias = offload.Task[int]
    assert alias.__origin__ is offload.Task
