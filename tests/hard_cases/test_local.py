"""loop_local / thread_local (issue 6, part 3): loop-bound clients get one instance per
loop, closed when the runtime stops that loop's lane."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

import httpx
import pytest
from fastapi import FastAPI

import offload


class LoopBoundClient:
    """Like an async DB/API client: it belongs to the loop it was created on."""

    created: ClassVar[list[LoopBoundClient]] = []

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.closed = False
        self.calls = 0
        LoopBoundClient.created.append(self)

    async def query(self) -> int:
        if asyncio.get_running_loop() is not self.loop:
            raise RuntimeError("Future attached to a different loop")
        self.calls += 1
        await asyncio.sleep(0)
        return id(self.loop)

    async def aclose(self) -> None:
        assert asyncio.get_running_loop() is self.loop, "closed on a foreign loop"
        self.closed = True


@pytest.fixture(autouse=True)
def _reset() -> None:
    LoopBoundClient.created.clear()


def test_home_and_background_loops_get_their_own_instance(run_loop: Callable[..., Any]) -> None:
    """Used from the home loop and a background loop at once: two instances, each used
    only on its loop, each closed on its own loop at shutdown."""
    db = offload.loop_local(LoopBoundClient, close=lambda c: c.aclose())

    async def use(n: int) -> set[int]:
        return {await db.query() for _ in range(n)}

    async def main() -> None:
        rt = offload.Runtime(background_loops=2)
        await rt.__aenter__()
        home = asyncio.get_running_loop()
        results = await asyncio.gather(
            use(20), rt.background.run(use, 20), rt.background.run(use, 20), use(5)
        )
        loops_seen = set().union(*results)
        assert id(home) in loops_seen
        assert len(loops_seen) >= 2
        assert len(LoopBoundClient.created) == len(loops_seen)
        assert all(c.calls > 0 for c in LoopBoundClient.created)
        await rt.shutdown(5)
        assert all(c.closed for c in LoopBoundClient.created)

    run_loop(main())


def test_a_real_httpx_client_per_loop(run_loop: Callable[..., Any]) -> None:
    """httpx.AsyncClient (over an in-process ASGI app) through loop_local on two loops."""
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "ok"}

    http = offload.loop_local(
        lambda: httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t"),
        close=lambda c: c.aclose(),
    )

    async def fetch() -> Any:
        response = await http.get("/ping")
        return response.json()

    async def main() -> None:
        async with offload.Runtime() as rt:
            home, background = await asyncio.gather(fetch(), rt.background.run(fetch))
            assert home == background == {"pong": "ok"}
            assert len(http.loops()) == 2
        assert http.loops() == []

    run_loop(main())


def test_a_loop_bound_object_on_another_loop_points_at_loop_local(
    run_loop: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """An asyncio object bound to the home loop, used on a background loop, fails loudly,
    and the error says to use loop_local (raised to the awaiting caller, and in the log)."""

    async def main() -> None:
        async with offload.Runtime() as rt:
            event = asyncio.Event()
            waiter = asyncio.ensure_future(event.wait())
            await asyncio.sleep(0)  # the event is now bound to the home loop

            async def use_it() -> None:
                await event.wait()

            with pytest.raises(RuntimeError) as info:
                await rt.background.run(use_it)
            # a note on 3.11+; on 3.10 (no notes) the hint joins the message
            said = [str(info.value), *getattr(info.value, "__notes__", ())]
            assert any("offload.loop_local" in text for text in said)
            task = rt.background.spawn(use_it)
            await asyncio.wait_for(asyncio.shield(task._done_future()), 10)
            event.set()
            await waiter

    run_loop(main())
    assert "offload.loop_local(factory)" in caplog.text


def test_instance_outside_a_loop_is_a_clear_error() -> None:
    local = offload.loop_local(object)
    with pytest.raises(RuntimeError, match=r"must be called from a coroutine"):
        local.instance()
    with pytest.raises(TypeError, match=r"needs a factory callable"):
        offload.loop_local(42)  # type: ignore[arg-type]


def test_aclose_recreates_on_next_use(run_loop: Callable[..., Any]) -> None:
    db = offload.loop_local(LoopBoundClient, close=lambda c: c.aclose())

    async def main() -> None:
        first = db.instance()
        await db.aclose()
        assert first.closed
        assert db.instance() is not first

    run_loop(main())


def test_thread_local_gives_each_pool_thread_its_own_and_closes_it() -> None:
    closed: list[int] = []

    class Conn:
        def __init__(self) -> None:
            self.thread = threading.get_ident()

    conns = offload.thread_local(Conn, close=lambda c: closed.append(c.thread))
    barrier = threading.Barrier(3, timeout=10)

    def work() -> int:
        conn = conns.instance()
        assert conn.thread == threading.get_ident()
        assert conns.instance() is conn
        barrier.wait()  # three tasks at once: three threads
        return conn.thread

    with offload.Runtime(threads=3) as rt:
        tasks = [rt.threads.spawn(work) for _ in range(3)]
        owners = {t.result(10) for t in tasks}
    assert len(owners) == 3
    deadline = time.monotonic() + 10  # a joined C thread frees its Python state just after
    while len(closed) < 3 and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    assert sorted(closed) == sorted(owners)  # the pool threads exited: each closed once


def test_async_methods_passed_to_other_loops_use_that_loops_instance(
    run_loop: Callable[..., Any],
) -> None:
    """`background.run(db.query)` and `offload.call(db.query)` (the method taken on another
    loop or outside any loop) run against the instance of the loop they run on."""
    db = offload.loop_local(LoopBoundClient, close=lambda c: c.aclose())

    async def main() -> None:
        async with offload.Runtime() as rt:
            home = asyncio.get_running_loop()
            on_background = await rt.background.run(db.query)
            from_thread = await rt.threads.run(rt.call, db.query)
            assert from_thread == id(home)
            assert on_background != id(home)
            assert on_background in {id(loop) for loop in rt.background_loops()}

    run_loop(main())
