"""offload.call (issue 6, part 2): sync code calls async code on the home loop (or a
background loop), blocking only its own thread."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from typing import Any

import pytest

import offload

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


async def where(x: int) -> tuple[int, int, str]:
    """The thread and loop it ran on, and the caller's context."""
    await asyncio.sleep(0)
    return x, threading.get_ident(), request_id.get()


async def fail() -> None:
    await asyncio.sleep(0)
    raise LookupError("missing")


async def cancel_myself() -> None:
    asyncio.current_task().cancel()  # type: ignore[union-attr]
    await asyncio.sleep(1)


def test_from_a_pool_thread_runs_on_the_home_loop(run_loop: Callable[..., Any]) -> None:
    """Sync code on offload.threads calls a coroutine: it runs on the home loop's thread,
    with the caller's contextvars, and only the pool thread blocks."""

    async def main() -> None:
        async with offload.Runtime() as rt:
            loop_thread = threading.get_ident()

            def sync_code() -> tuple[int, int, str]:
                request_id.set("req-7")
                return rt.call(where, 5)

            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.001)

            tick_task = asyncio.ensure_future(ticker())
            x, thread, rid = await rt.threads.run(sync_code)
            tick_task.cancel()
            assert (x, thread, rid) == (5, loop_thread, "req-7")
            assert ticks > 0  # the home loop kept running while the thread waited

    run_loop(main())


def test_without_a_home_loop_it_uses_a_background_loop() -> None:
    async def which_loop() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    with offload.Runtime() as rt:
        assert rt.call(where(1))[0] == 1
        assert rt.call(which_loop) in rt.background_loops()


def test_exceptions_cross_over_as_they_are(caplog: pytest.LogCaptureFixture) -> None:
    """The coroutine's exception is raised in the caller, and not also logged."""
    with offload.Runtime() as rt:
        with pytest.raises(LookupError, match="missing"):
            rt.call(fail)
        stats = rt.stats()
        assert stats["loop"]["failed"] + stats["background"]["failed"] == 1
    assert "failed" not in caplog.text


def test_cancellation_crosses_over() -> None:
    with offload.Runtime() as rt, pytest.raises(asyncio.CancelledError):
        rt.call(cancel_myself)


def test_timeout_cancels_the_coroutine() -> None:
    cleaned = threading.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            cleaned.set()

    with offload.Runtime() as rt:
        with pytest.raises(TimeoutError, match=r"did not finish within 0\.1 s; it was cancelled"):
            rt.call(slow, timeout=0.1)
        assert cleaned.wait(5)


def test_on_an_event_loop_thread_it_refuses_instead_of_deadlocking(
    run_loop: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with offload.Runtime() as rt:
            with pytest.raises(RuntimeError, match=r"would block the running event loop.*await"):
                rt.call(where, 1)

    run_loop(main())


def test_bad_targets_are_refused() -> None:
    with offload.Runtime() as rt:
        with pytest.raises(TypeError, match=r"is a sync callable; call it directly"):
            rt.call(len, "abc")
        with pytest.raises(TypeError, match=r"needs a coroutine or an async function, not int"):
            rt.call(42)
        with pytest.raises(TypeError, match=r"timeout must be a number"):
            rt.call(where, 1, timeout="soon")


def test_module_level_call_from_a_plain_thread(run_loop: Callable[..., Any]) -> None:
    """offload.call on the default runtime, from a thread that is not offload's."""
    rt = offload.Runtime()

    async def main() -> None:
        rt.start()
        box: list[Any] = []
        thread = threading.Thread(target=lambda: box.append(rt.call(where, 3)))
        thread.start()
        while thread.is_alive():
            await asyncio.sleep(0.01)
        assert box[0][:2] == (3, threading.get_ident())
        await rt.shutdown(5)

    run_loop(main())
    assert callable(offload.call)
