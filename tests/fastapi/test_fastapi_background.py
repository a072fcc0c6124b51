"""The drop-in BackgroundTasks: after the response, concurrently, on offload lanes, drained."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from typing import Any

import pytest
from fastapi import FastAPI
from offload_fastapi_support import WAIT, serve
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import offload
import offload.fastapi
from offload.fastapi import BackgroundTasks, OffloadBackgroundTasks

pytestmark = pytest.mark.anyio


def make_app(runtime: offload.Runtime, **lifespan_options: Any) -> FastAPI:
    return FastAPI(lifespan=offload.fastapi.lifespan(runtime=runtime, **lifespan_options))


class ResponseWatcher:
    """ASGI middleware: records when the last byte of each response has been sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.sent = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def watch(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self.sent.set()

        await self.app(scope, receive, watch)


async def test_tasks_start_after_the_response_is_sent(runtime: offload.Runtime) -> None:
    app = make_app(runtime)
    watcher = ResponseWatcher(app)
    seen: dict[str, bool] = {}

    async def async_task() -> None:
        seen["async"] = watcher.sent.is_set()

    def sync_task() -> None:
        seen["sync"] = watcher.sent.is_set()

    @app.post("/go")
    async def go(background_tasks: BackgroundTasks) -> dict[str, str]:
        background_tasks.add_task(async_task)
        background_tasks.add_task(sync_task)
        return {"ok": "yes"}

    async with app.router.lifespan_context(app):
        import httpx

        transport = httpx.ASGITransport(app=watcher)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            assert (await client.post("/go")).status_code == 200
        assert not await runtime.drain(WAIT)
    assert seen == {"async": True, "sync": True}


async def test_async_tasks_run_concurrently(runtime: offload.Runtime) -> None:
    app = make_app(runtime)
    a_started, b_started = asyncio.Event(), asyncio.Event()
    met: list[str] = []

    async def meet(mine: asyncio.Event, other: asyncio.Event, name: str) -> None:
        # Run one after the other, as FastAPI's do, and this times out.
        mine.set()
        await asyncio.wait_for(other.wait(), WAIT)
        met.append(name)

    @app.post("/go")
    async def go(background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(meet, a_started, b_started, "a")
        background_tasks.add_task(meet, b_started, a_started, "b")

    async with serve(app) as client:
        await client.post("/go")
        assert not await runtime.drain(WAIT)
    assert sorted(met) == ["a", "b"]


async def test_sync_tasks_run_concurrently_on_the_offload_pool(runtime: offload.Runtime) -> None:
    app = make_app(runtime)
    barrier = threading.Barrier(2, timeout=WAIT)
    threads: list[str] = []
    holder: list[OffloadBackgroundTasks] = []

    def meet() -> None:
        threads.append(threading.current_thread().name)
        barrier.wait()  # both must be running at once

    @app.post("/go")
    def go(background_tasks: BackgroundTasks) -> None:  # a sync route works the same
        holder.append(background_tasks)
        background_tasks.add_task(meet)
        background_tasks.add_task(meet)

    async with serve(app) as client:
        await client.post("/go")
        assert not await runtime.drain(WAIT)
    assert len(threads) == 2
    assert not any(name.startswith("AnyIO worker") for name in threads)
    [tasks] = holder
    assert [t.lane for t in tasks.spawned] == ["threads", "threads"]
    assert [t.state for t in tasks.spawned] == ["succeeded", "succeeded"]


async def test_one_failure_does_not_skip_the_others(
    runtime: offload.Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="offload")
    app = make_app(runtime)
    ran: list[str] = []

    def sync_boom() -> None:
        raise ValueError("sync boom")

    async def async_boom() -> None:
        raise KeyError("async boom")

    def record(what: str) -> None:
        ran.append(what)

    async def arecord(what: str) -> None:
        ran.append(what)

    @app.post("/go")
    async def go(background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(sync_boom)
        background_tasks.add_task(record, "sync after")
        background_tasks.add_task(async_boom)
        background_tasks.add_task(arecord, what="async after")

    async with serve(app) as client:
        assert (await client.post("/go")).status_code == 200
        assert not await runtime.drain(WAIT)
    assert sorted(ran) == ["async after", "sync after"]
    failed = [r.getMessage() for r in caplog.records if r.exc_info]
    assert any("sync_boom" in m for m in failed) and any("async_boom" in m for m in failed)


async def test_detached_tasks_are_drained_at_shutdown(runtime: offload.Runtime) -> None:
    app = make_app(runtime, drain_timeout=WAIT)
    done: list[str] = []

    async def slow_async() -> None:
        await asyncio.sleep(0.3)
        done.append("async")

    def slow_sync() -> None:
        threading.Event().wait(0.3)
        done.append("sync")

    @app.post("/go")
    async def go(background_tasks: BackgroundTasks) -> None:
        background_tasks.detach = True
        background_tasks.add_task(slow_async)
        background_tasks.add_task(slow_sync)

    async with serve(app) as client:
        await client.post("/go")
        assert done == []  # the request did not wait for them
    assert sorted(done) == ["async", "sync"]


async def test_partials_and_async_callables(runtime: offload.Runtime) -> None:
    app = make_app(runtime)
    got: list[Any] = []
    holder: list[OffloadBackgroundTasks] = []

    async def add(a: int, b: int) -> None:
        got.append(a + b)

    class Notifier:
        async def __call__(self, message: str) -> None:
            got.append(message)

    @app.post("/go")
    async def go(background_tasks: BackgroundTasks) -> None:
        holder.append(background_tasks)
        background_tasks.add_task(functools.partial(add, 1), b=2)
        background_tasks.add_task(Notifier(), "hello")

    async with serve(app) as client:
        await client.post("/go")
        assert not await runtime.drain(WAIT)
    assert sorted(got, key=str) == [3, "hello"]
    assert [t.name for t in holder[0].spawned] == [add.__qualname__, Notifier.__qualname__]
    assert [t.lane for t in holder[0].spawned] == ["loop", "loop"]


async def test_a_task_that_cannot_start_is_logged(
    runtime: offload.Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    runtime.start()
    await runtime.shutdown(1)
    tasks = BackgroundTasks(runtime=runtime)
    ran: list[int] = []

    async def never_started() -> None:
        ran.append(2)  # pragma: no cover

    tasks.add_task(ran.append, 1)
    tasks.add_task(never_started)
    await tasks()  # Closed: logged, not raised
    assert ran == [] and tasks.spawned == []
    assert "could not be started" in caplog.text
    assert "append" in caplog.text and "never_started" in caplog.text


async def test_usable_as_a_response_background(runtime: offload.Runtime) -> None:
    app = make_app(runtime)
    ran: list[str] = []

    @app.get("/go")
    async def go() -> JSONResponse:
        tasks = BackgroundTasks(runtime=runtime)
        assert isinstance(tasks, OffloadBackgroundTasks)
        tasks.add_task(ran.append, "ran")
        return JSONResponse({"ok": True}, background=tasks)

    async with serve(app) as client:
        await client.get("/go")
        assert not await runtime.drain(WAIT)
    assert ran == ["ran"]
