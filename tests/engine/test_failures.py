"""Every failure is reported exactly once: to error_handler, else as one ERROR record on
the `offload` logger, or raised to whoever awaits it; never "Task exception was never
retrieved"."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
from typing import Any

import pytest

import offload

from .conftest import Arun, MakeRuntime
from .support import WAIT, Gate, lane_names_of, records_of, run_loop, wait_until


class Handler:
    """An error_handler recording (task, exc) pairs from any thread."""

    def __init__(self, raises: BaseException | None = None) -> None:
        self.calls: list[tuple[offload.Task[Any], BaseException]] = []
        self.lock = threading.Lock()
        self.raises = raises

    def __call__(self, task: offload.Task[Any], exc: BaseException) -> None:
        with self.lock:
            self.calls.append((task, exc))
        if self.raises is not None:
            raise self.raises


def fail_sync(i: int) -> None:
    raise ValueError(f"sync {i}")


async def fail_async(i: int) -> None:
    await asyncio.sleep(0)
    raise ValueError(f"async {i}")


def fail_later_sync(hold: Gate) -> None:
    hold.wait()
    raise ValueError("later")


async def fail_later(hold: Gate) -> None:
    await hold.async_wait()
    raise ValueError("later")


def failing(lane: str) -> Any:
    return fail_sync if lane == "threads" else fail_async


def test_error_handler_is_called_once_per_failing_task_on_every_lane(
    arun: Arun, runtime: MakeRuntime, offload_log: pytest.LogCaptureFixture
) -> None:
    """error_handler(task, exc) runs exactly once per failure, on every lane; successes and
    handled failures log nothing."""
    handler = Handler()

    async def main() -> list[offload.Task[Any]]:
        async with runtime(error_handler=handler) as rt:
            tasks = []
            for name, lane in lane_names_of(rt).items():
                tasks += [lane.spawn(failing(name), i) for i in range(3)]
                tasks.append(lane.spawn(asyncio.sleep if name != "threads" else int, 0))
            assert not await rt.drain(WAIT)
            return tasks

    tasks = arun(main())
    failed = [t for t in tasks if t.state == "failed"]
    assert len(failed) == 9 and all(t.state == "succeeded" for t in tasks if t not in failed)
    assert sorted(t.id for t, _ in handler.calls) == sorted(t.id for t in failed)
    for task, exc in handler.calls:
        assert isinstance(exc, ValueError) and task.exception() is exc
    assert records_of(offload_log.records, logging.ERROR) == []


@pytest.mark.parametrize("lane", ["threads", "loop", "background"])
def test_without_a_handler_a_failure_is_one_error_record_with_its_traceback(
    arun: Arun, runtime: MakeRuntime, offload_log: pytest.LogCaptureFixture, lane: str
) -> None:
    """No error_handler: one ERROR record on `offload` naming the task, its id and lane,
    with the traceback of the exception."""

    async def main() -> offload.Task[Any]:
        async with runtime() as rt:
            task = lane_names_of(rt)[lane].options(name="nightly-report").spawn(failing(lane), 7)
            assert not await rt.drain(WAIT)
            return task

    task = arun(main())
    errors = records_of(offload_log.records, logging.ERROR)
    assert len(errors) == 1, [r.getMessage() for r in errors]
    record = errors[0]
    message = record.getMessage()
    assert "nightly-report" in message and f"id={task.id}" in message and f"lane={lane}" in message
    assert record.exc_info is not None and record.exc_info[1] is task.exception()
    text = logging.Formatter().formatException(record.exc_info)
    assert "Traceback" in text and failing(lane).__name__ in text and "ValueError" in text
    assert getattr(record, "offload_task", None) is task


def test_an_awaited_failure_is_raised_to_the_awaiter_not_reported(
    arun: Arun, runtime: MakeRuntime, offload_log: pytest.LogCaptureFixture
) -> None:
    """`await run(...)` and `await task` (awaiting before it fails) raise the exception to
    the caller; the handler is not called and nothing is logged."""
    handler = Handler()

    async def main() -> None:
        async with runtime(error_handler=handler) as rt:
            for lane_name, lane in lane_names_of(rt).items():
                with pytest.raises(ValueError, match="1"):
                    await lane.run(failing(lane_name), 1)
                hold = Gate()
                task = lane.spawn(fail_later_sync if lane_name == "threads" else fail_later, hold)
                waiter = asyncio.ensure_future(_await(task))
                await asyncio.sleep(0.01)
                hold.open()
                with pytest.raises(ValueError, match="later"):
                    await waiter

    arun(main())
    assert handler.calls == []
    assert records_of(offload_log.records, logging.ERROR) == []


async def _await(task: offload.Task[Any]) -> Any:
    return await task


def test_a_failure_whose_awaiter_went_away_is_reported_once(
    arun: Arun, runtime: MakeRuntime
) -> None:
    """If the only awaiter is cancelled before the task fails, the failure goes to the
    handler (once), since nobody else will see it."""
    handler = Handler()

    async def main() -> offload.Task[Any]:
        async with runtime(error_handler=handler) as rt:
            hold = Gate()

            async def later() -> None:
                await hold.async_wait()
                raise ValueError("unseen")

            task = rt.background.spawn(later)
            waiter = asyncio.ensure_future(_await(task))
            await asyncio.sleep(0.01)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            hold.open()
            assert not await rt.drain(WAIT)
            return task

    task = arun(main())
    assert task.state == "failed"
    assert [(t.id, str(e)) for t, e in handler.calls] == [(task.id, "unseen")]


def test_a_failure_ending_just_before_its_awaiter_is_cancelled_is_reported(
    arun: Arun, runtime: MakeRuntime
) -> None:
    """The task fails, then (before the loop wakes the awaiter) the awaiter is cancelled:
    the failure was seen by nobody, so the handler gets it once."""
    handler = Handler()

    async def main() -> offload.Task[Any]:
        async with runtime(error_handler=handler) as rt:
            hold = Gate()
            task = rt.threads.spawn(fail_later_sync, hold)
            waiter = asyncio.ensure_future(_await(task))
            await asyncio.sleep(0.01)  # the waiter now awaits the task
            hold.open()
            assert wait_until(task.done)  # blocks the loop: the wakeup stays queued
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert not await rt.drain(WAIT)
            return task

    task = arun(main())
    assert task.state == "failed"
    assert [(t.id, str(e)) for t, e in handler.calls] == [(task.id, "later")]


def test_an_error_handler_that_raises_is_logged_and_changes_nothing_else(
    arun: Arun, runtime: MakeRuntime, offload_log: pytest.LogCaptureFixture
) -> None:
    """A raising error_handler: one ERROR record per failure saying so, with the handler's
    exception; tasks stay failed, counts stay right, the lanes keep working."""
    handler = Handler(raises=RuntimeError("handler broke"))

    async def main() -> list[offload.Task[Any]]:
        async with runtime(error_handler=handler) as rt:
            tasks = [lane.spawn(failing(n), 0) for n, lane in lane_names_of(rt).items()]
            assert not await rt.drain(WAIT)
            assert await rt.threads.run(lambda: "ok") == "ok"
            assert await rt.background.run(asyncio.sleep, 0, "ok") == "ok"
            stats = rt.stats()
            assert [stats[n]["failed"] for n in ("threads", "loop", "background")] == [1, 1, 1]
            return tasks

    tasks = arun(main())
    assert all(t.state == "failed" for t in tasks)
    assert len(handler.calls) == 3
    errors = records_of(offload_log.records, logging.ERROR)
    assert len(errors) == 3
    for record in errors:
        assert "error_handler raised" in record.getMessage()
        assert record.exc_info is not None and str(record.exc_info[1]) == "handler broke"


def test_a_raising_done_callback_is_logged_and_the_others_still_run(
    runtime: MakeRuntime, offload_log: pytest.LogCaptureFixture
) -> None:
    """A done callback that raises is logged on `offload`; the next callbacks still run and
    the task's own outcome is untouched."""
    rt = runtime()
    hold = Gate()
    task = rt.threads.spawn(lambda: hold.wait() and "value")
    seen: list[str] = []

    def broken(t: offload.Task[Any]) -> None:
        raise KeyError("callback")

    task.add_done_callback(broken)
    task.add_done_callback(lambda t: seen.append(t.result()))
    hold.open()
    assert task.result(WAIT) == "value"
    assert rt.close(WAIT) == set()
    assert seen == ["value"]
    errors = records_of(offload_log.records, logging.ERROR)
    assert len(errors) == 1 and "done-callback" in errors[0].getMessage()


def test_cancellation_is_not_a_failure(
    loop_kind: str, runtime: MakeRuntime, offload_log: pytest.LogCaptureFixture
) -> None:
    """Tasks cancelled through offload call no error_handler and log no ERROR."""
    handler = Handler()
    rt = runtime(threads=1, error_handler=handler)
    hold = Gate()

    async def sleeper() -> None:
        await asyncio.sleep(60)

    first = rt.threads.spawn(hold.wait)
    pending = rt.threads.spawn(int)
    running = rt.background.spawn(sleeper)
    assert pending.cancel() and running.cancel()
    hold.open()
    first.result(WAIT)
    assert not rt.close(WAIT)
    assert pending.cancelled() and running.cancelled()
    assert handler.calls == [] and records_of(offload_log.records, logging.ERROR) == []


def test_never_task_exception_was_never_retrieved(
    loop_kind: str, runtime: MakeRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    """Unawaited failing coroutines on a loop that then closes: asyncio logs nothing, even
    after the loop and every task are garbage-collected."""
    caplog.set_level(logging.WARNING, logger="asyncio")
    handler = Handler()
    rt = runtime(error_handler=handler)

    async def main() -> None:
        for i in range(20):
            rt.loop.spawn(fail_async, i)
            rt.background.spawn(fail_async, i)
        assert not await rt.drain(WAIT)

    run_loop(loop_kind, main())
    gc.collect()
    gc.collect()
    assert len(handler.calls) == 40
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


def test_a_failing_loop_factory_fails_the_task_with_the_reason(
    runtime: MakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A background task that can't start because loop_factory raised fails with that
    exception (or one caused by it), reported once like any failure, and nothing escapes
    to sys.unraisablehook."""
    handler = Handler()
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)

    def no_loops() -> asyncio.AbstractEventLoop:
        raise OSError("no loops today")

    rt = runtime(loop_factory=no_loops, error_handler=handler)
    task = rt.background.spawn(asyncio.sleep, 0)
    exc = task.exception(WAIT)
    assert isinstance(exc, OSError) or isinstance(getattr(exc, "__cause__", None), OSError)
    # The failure is reported right after the waiters are woken, on the finishing thread.
    wait_until(lambda: handler.calls != [])
    assert [t for t, _ in handler.calls] == [task]
    assert [repr(u.exc_value) for u in unraisable] == []
