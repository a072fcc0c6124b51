"""Issue 10, part B: edges of the Python face. configure() really applies lane limits,
offload.call() giving up still gets a later failure reported, bad numbers (nan, huge
ints) are refused naming the option, loop_local refuses async factories, and
shutdown/drain called from inside an offload task don't wait for themselves."""

from __future__ import annotations

import _thread
import asyncio
import math
import threading
from typing import Any

import pytest

import offload

from .conftest import Arun, MakeRuntime
from .support import WAIT, Gate, run_python, wait_until

# --- item 8: configure() -----------------------------------------------------------------


def test_configure_applies_lane_limits(runtime: MakeRuntime) -> None:
    """configure(max_pending=, max_running=, on_full=) reaches every lane: what
    options_in_effect says is what the lane enforces."""
    rt = runtime()
    rt.configure(threads=2, max_pending=1, max_running=1, on_full="reject")
    assert rt.options_in_effect["lanes"]["threads"] == {
        "max_pending": 1,
        "max_running": 1,
        "on_full": "reject",
    }
    gate = Gate()
    running = rt.threads.spawn(gate.wait)
    queued = rt.threads.spawn(gate.wait)
    try:
        with pytest.raises(offload.Full):
            rt.threads.spawn(gate.wait)
        stats = rt.threads.stats()
        assert (stats["max_pending"], stats["max_running"]) == (1, 1)
    finally:
        gate.open()
    assert running.result(WAIT) is True and queued.result(WAIT) is True


def test_configure_block_bounds_the_queue(runtime: MakeRuntime) -> None:
    """configure(threads=1, max_pending=1, on_full="block"): a producer thread is held
    back instead of queueing without bound."""
    rt = runtime()
    rt.configure(threads=1, max_pending=1, on_full="block")
    gate = Gate()
    spawned: list[offload.Task[Any]] = []

    def producer() -> None:
        for _ in range(50):
            spawned.append(rt.threads.spawn(gate.wait))

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    assert wait_until(lambda: len(spawned) >= 2)
    thread.join(0.5)
    assert thread.is_alive(), "on_full='block' did not block: the queue is unbounded"
    assert rt.threads.stats()["pending"] <= 1
    gate.open()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert all(t.result(WAIT) is True for t in spawned)


def test_configure_keeps_earlier_per_lane_overrides(runtime: MakeRuntime) -> None:
    """Options given earlier (top-level or per lane) stay unless configured again."""
    rt = runtime(lanes={"background": {"max_pending": 5}})
    rt.configure(max_running=3)
    lanes = rt.options_in_effect["lanes"]
    assert lanes["background"] == {"max_pending": 5, "max_running": 3, "on_full": "reject"}
    assert lanes["threads"]["max_running"] == 3


# --- item 9: offload.call() giving up ------------------------------------------------------


async def cleanup_fails_when_cancelled(started: threading.Event) -> None:
    started.set()
    try:
        await asyncio.sleep(WAIT * 3)
    finally:
        raise LookupError("cleanup failed after call() gave up")


def _collecting_runtime(runtime: MakeRuntime) -> tuple[offload.Runtime, list[BaseException]]:
    failures: list[BaseException] = []
    rt = runtime(error_handler=lambda task, exc: failures.append(exc))
    return rt, failures


def test_call_timeout_reports_a_later_failure(loop_kind: str, runtime: MakeRuntime) -> None:
    """call(timeout) gives up and cancels; the cleanup then raises: that failure reaches
    the error_handler (the task was still marked observed, so it was lost)."""
    rt, failures = _collecting_runtime(runtime)
    started = threading.Event()
    with pytest.raises(TimeoutError):
        rt.call(cleanup_fails_when_cancelled, started, timeout=0.2)
    assert wait_until(lambda: bool(failures)), "the failure after call() gave up was lost"
    assert [type(f) for f in failures] == [LookupError]


def test_call_interrupted_by_ctrl_c_reports_a_later_failure(
    loop_kind: str, runtime: MakeRuntime
) -> None:
    """Ctrl-C while call() waits: the coroutine is cancelled and its failing cleanup is
    reported, not lost."""
    rt, failures = _collecting_runtime(runtime)
    started = threading.Event()

    def press_ctrl_c() -> None:
        started.wait(WAIT)
        _thread.interrupt_main()

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        rt.call(cleanup_fails_when_cancelled, started)
    assert wait_until(lambda: bool(failures)), "the failure after Ctrl-C was lost"
    assert [type(f) for f in failures] == [LookupError]


# --- item 15: bad numbers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"max_pending": 2**70}, "max_pending"),
        ({"max_running": 2**63}, "max_running"),
        ({"threads": 2**70}, "threads"),
        ({"min_threads": 2**70}, "min_threads"),
        ({"background_loops": 2**31}, "background_loops"),
        ({"processes": 2**70}, "processes"),
        ({"lanes": {"threads": {"max_pending": 2**64}}}, "max_pending"),
        ({"idle_timeout": math.nan}, "idle_timeout"),
        ({"shutdown_timeout": math.nan}, "shutdown_timeout"),
    ],
)
def test_out_of_range_options_are_refused_by_name(options: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        offload.Runtime(**options)
    rt = offload.Runtime()
    with pytest.raises(ValueError, match=named):
        rt.configure(**options)


def test_nan_timeouts_are_refused(arun: Arun, runtime: MakeRuntime) -> None:
    """nan is no timeout: drain, drain_sync, close, shutdown and call refuse it."""
    rt = runtime()
    with pytest.raises(ValueError, match="timeout"):
        rt.drain_sync(math.nan)
    with pytest.raises(ValueError, match="timeout"):
        rt.close(math.nan)
    with pytest.raises(ValueError, match="timeout"):
        rt.call(asyncio.sleep, 0, timeout=math.nan)

    async def main() -> None:
        with pytest.raises(ValueError, match="timeout"):
            await rt.drain(math.nan)
        with pytest.raises(ValueError, match="timeout"):
            await rt.shutdown(math.nan)

    arun(main())


def test_an_infinite_shutdown_timeout_is_no_timeout() -> None:
    """shutdown_timeout=inf: leaving `with` returns (inf means no limit on the drain,
    never a deadline computed from inf); checked in a child so a hang fails."""
    result = run_python(
        """
        import math, offload
        with offload.Runtime(shutdown_timeout=math.inf) as rt:
            assert rt.threads.spawn(sum, [1, 2]).result(10) == 3
        print("left")
        """,
        timeout=60,
    )
    assert result.returncode == 0 and "left" in result.stdout, result.stderr


def test_loop_local_refuses_an_async_factory() -> None:
    async def make_client() -> object:
        return object()

    class AsyncCallable:
        async def __call__(self) -> object:
            return object()

    for factory in (make_client, AsyncCallable()):
        with pytest.raises(TypeError, match="async"):
            offload.loop_local(factory)


# --- item 6: shutdown/drain from inside an offload task -------------------------------------


def test_shutdown_awaited_inside_a_loop_task_completes(arun: Arun, runtime: MakeRuntime) -> None:
    """`await rt.shutdown()` (no timeout) from an offload task on the home loop: it
    doesn't wait for itself (it waited forever), drains the others, and the whole
    sequence runs (background loops stopped); the task then ends normally."""
    rt = runtime()

    async def shut_down_from_inside() -> set[Any]:
        return await rt.shutdown()

    async def main() -> None:
        rt.start()
        other = rt.background.spawn(asyncio.sleep, 0.1)
        task = rt.spawn(shut_down_from_inside)
        assert await asyncio.wait_for(task, WAIT) == set()
        assert other.state == "succeeded"
        assert rt.closed and all(loop.is_closed() for loop in rt.background_loops())

    arun(main(), timeout=WAIT * 2)


def test_shutdown_with_a_timeout_inside_a_loop_task_does_not_cancel_itself(
    arun: Arun, runtime: MakeRuntime
) -> None:
    """With a timeout, shutdown used to cancel its own caller after the drain share and
    skip the rest of the sequence."""
    rt = runtime()

    async def shut_down_from_inside() -> str:
        await rt.shutdown(1.0)
        return "finished"

    async def main() -> None:
        rt.start()
        rt.background.spawn(asyncio.sleep, WAIT * 3)
        task = rt.spawn(shut_down_from_inside)
        assert await asyncio.wait_for(task, WAIT) == "finished"
        assert all(loop.is_closed() for loop in rt.background_loops())

    arun(main(), timeout=WAIT * 2)


def test_drain_inside_a_task_skips_itself(arun: Arun, runtime: MakeRuntime) -> None:
    rt = runtime()

    async def drain_from_inside() -> set[Any]:
        return await rt.drain()

    async def main() -> None:
        rt.start()
        done = rt.spawn(asyncio.sleep, 0.05)
        task = rt.spawn(drain_from_inside)
        assert await asyncio.wait_for(task, WAIT) == set()
        assert done.state == "succeeded"

    arun(main(), timeout=WAIT * 2)


def test_shutdown_from_a_background_task_is_refused(arun: Arun, runtime: MakeRuntime) -> None:
    """It would stop the loop it runs on: a clear RuntimeError instead."""
    rt = runtime()

    async def shut_down_from_inside() -> None:
        await rt.shutdown(1.0)

    async def main() -> None:
        task = rt.background.spawn(shut_down_from_inside)
        with pytest.raises(RuntimeError, match="background lane"):
            await asyncio.wait_for(task, WAIT)
        assert not rt.closed

    arun(main(), timeout=WAIT * 2)


def test_sync_drain_and_close_from_a_threads_lane_task_never_wait_for_themselves() -> None:
    """The sync sibling of item 6: drain_sync() inside a threads-lane task leaves that
    task out (it used to wait for itself, forever with timeout=None), and close() there
    is refused at once with a message, instead of waiting for its own thread."""
    proc = run_python(
        """
        import time, offload

        rt = offload.Runtime(threads=2)
        other = rt.threads.spawn(time.sleep, 0.2)

        def inside():
            left = rt.drain_sync(None)   # waits for `other`, not for itself
            assert other.done() and left == set(), left
            try:
                rt.close(None)
            except RuntimeError as exc:
                return str(exc)
            return "close() was accepted"

        said = rt.threads.options(name="cleanup").spawn(inside).result(20)
        assert "close() called from task 'cleanup' on offload's threads lane" in said, said
        assert rt.close(10) == set()
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"
