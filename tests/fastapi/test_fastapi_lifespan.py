"""offload.fastapi.lifespan: start on the app's loop, compose with the app's lifespan, drain."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from offload_fastapi_support import serve

import offload
import offload.fastapi
from offload.fastapi import Offload, runtime_of

pytestmark = pytest.mark.anyio


async def test_starts_on_the_app_loop_and_shuts_down(runtime: offload.Runtime) -> None:
    app = FastAPI(lifespan=offload.fastapi.lifespan(runtime=runtime))
    async with serve(app):
        assert runtime.started and not runtime.closed
        assert runtime.home_loop is asyncio.get_running_loop()
        assert runtime_of(app) is runtime
    assert runtime.closed


async def test_app_lifespan_runs_inside_the_runtime(runtime: offload.Runtime) -> None:
    events: list[str] = []

    async def note(what: str) -> None:
        events.append(what)

    @asynccontextmanager
    async def app_lifespan(app: FastAPI) -> AsyncIterator[None]:
        assert runtime.started, "offload must start before the app's startup"
        await runtime.spawn(note, "spawned at startup")
        events.append("app startup")
        yield
        events.append("app shutdown")
        assert not runtime.closed, "the app's shutdown must run before offload's"
        runtime.spawn(note, "spawned at app shutdown")  # still accepted, then drained

    app = FastAPI(lifespan=offload.fastapi.lifespan(app_lifespan, runtime=runtime))
    async with serve(app):
        events.append("serving")
    assert events == [
        "spawned at startup",
        "app startup",
        "serving",
        "app shutdown",
        "spawned at app shutdown",
    ]
    assert runtime.closed


async def test_app_lifespan_state_passes_through(runtime: offload.Runtime) -> None:
    @asynccontextmanager
    async def app_lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        yield {"db": "connection"}

    app = FastAPI(lifespan=offload.fastapi.lifespan(app_lifespan, runtime=runtime))
    async with app.router.lifespan_context(app) as state:
        assert state == {"db": "connection"}


async def test_failed_app_startup_still_shuts_offload_down(runtime: offload.Runtime) -> None:
    @asynccontextmanager
    async def app_lifespan(app: FastAPI) -> AsyncIterator[None]:
        raise RuntimeError("database unreachable")
        yield  # pragma: no cover

    app = FastAPI(lifespan=offload.fastapi.lifespan(app_lifespan, runtime=runtime))
    with pytest.raises(RuntimeError, match="database unreachable"):
        async with serve(app):
            pass  # pragma: no cover
    assert runtime.closed


async def test_unfinished_tasks_are_logged_by_name(
    runtime: offload.Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="offload")
    finished = asyncio.Event()

    async def quick() -> None:
        finished.set()

    app = FastAPI(lifespan=offload.fastapi.lifespan(runtime=runtime, drain_timeout=0.2))
    async with serve(app):
        runtime.options(name="never-ending").spawn(asyncio.sleep, 3600)
        runtime.options(name="quick-one").spawn(quick)
    assert finished.is_set()
    unfinished = [r.getMessage() for r in caplog.records if "did not finish" in r.getMessage()]
    assert any("never-ending" in message for message in unfinished), caplog.text
    assert not any("quick-one" in message for message in unfinished)


def test_drain_timeout_is_checked() -> None:
    with pytest.raises(ValueError, match="drain_timeout"):
        offload.fastapi.lifespan(drain_timeout=-1)
    with pytest.raises(TypeError, match="drain_timeout"):
        offload.fastapi.lifespan(drain_timeout="10")  # type: ignore[arg-type]


async def test_dependency_injects_the_apps_runtime(runtime: offload.Runtime) -> None:
    app = FastAPI(lifespan=offload.fastapi.lifespan(runtime=runtime))

    @app.get("/which")
    async def which(rt: Offload) -> dict[str, bool]:
        return {"same": rt is runtime}

    async with serve(app) as client:
        assert (await client.get("/which")).json() == {"same": True}


def test_without_the_lifespan_the_default_runtime_is_used() -> None:
    assert runtime_of(FastAPI()) is offload.default_runtime()
