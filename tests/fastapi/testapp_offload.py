"""The app the subprocess tests run under uvicorn (see offload_fastapi_support.Server).

Every task gets a unique name from the test; it logs "finished <name>" when it completes,
so the test can check that each accepted task either finished or was logged by name as
unfinished by the shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query

import offload
import offload.fastapi
from offload.fastapi import BackgroundTasks, dashboard_router

logging.basicConfig(
    level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
)
log = logging.getLogger("testapp")

TOKEN = "t0ken"

app = FastAPI(
    lifespan=offload.fastapi.lifespan(
        drain_timeout=float(os.environ.get("TESTAPP_DRAIN_TIMEOUT", "1.0"))
    )
)


def authorize(token: Annotated[str | None, Query()] = None) -> None:
    if token is None:
        raise HTTPException(401, "token required")
    if token != TOKEN:
        raise HTTPException(403, "wrong token")


# Samples every 0.25 s over 2 minutes: the browser test sees the charts move quickly.
dashboard = dashboard_router(authorize=authorize, sample_seconds=0.25, history_seconds=120)
app.include_router(dashboard, prefix="/offload")


@offload.periodic(every=3600, name="testapp-hourly")  # for the dashboard to show
def hourly_report() -> None:
    log.info("hourly report")


async def sleep_async(name: str, seconds: float) -> None:
    await asyncio.sleep(seconds)
    log.info("finished %s", name)


def sleep_sync(name: str, seconds: float) -> None:
    time.sleep(seconds)
    log.info("finished %s", name)


async def fail_async(name: str) -> None:
    await asyncio.sleep(0)
    raise ValueError(f"boom from {name}")


_attempts: dict[str, int] = {}


async def fail_twice_async(name: str) -> None:
    _attempts[name] = _attempts.get(name, 0) + 1
    if _attempts[name] < 3:
        raise ConnectionError(f"attempt {_attempts[name]} of {name}")
    log.info("finished %s", name)


@app.get("/healthz")
async def healthz() -> dict[str, bool]:
    return {"ok": True}


@app.get("/loop")
async def loop() -> dict[str, str]:
    running = asyncio.get_running_loop()
    return {"loop": f"{type(running).__module__}.{type(running).__qualname__}"}


@app.post("/spawn")
async def spawn(kind: str, name: str, seconds: float = 0.0) -> dict[str, Any]:
    lane = offload.options(name=name)
    if kind == "later":  # scheduled `seconds` from now
        task = offload.options(name=name, delay=seconds).spawn(sleep_sync, name, 0)
    elif kind == "flaky":  # fails twice, then succeeds on its third attempt
        task = offload.options(name=name, retries=3, backoff=0.01).spawn(fail_twice_async, name)
    elif kind == "async":
        task = lane.spawn(sleep_async, name, seconds)
    elif kind == "sync":
        task = lane.spawn(sleep_sync, name, seconds)
    elif kind == "fail":
        task = lane.spawn(fail_async, name)
    else:
        raise HTTPException(400, f"unknown kind {kind!r}")
    return {"id": task.id, "name": task.name, "lane": task.lane}


@app.post("/background")
async def background(
    name: str, background_tasks: BackgroundTasks, seconds: float = 0.0, delay: float = 0.0
) -> dict[str, list[str]]:
    """Queue one async and one sync task; `delay` keeps the request in flight first."""
    if delay:
        log.info("request %s in flight", name)
        await asyncio.sleep(delay)
    names = [f"{name}-async", f"{name}-sync"]
    background_tasks.add_task(sleep_async, names[0], seconds)
    background_tasks.add_task(sleep_sync, names[1], seconds)
    return {"names": names}


@app.post("/flood")
async def flood(prefix: str, n: int, long_every: int = 0) -> dict[str, int]:
    """Spawn `n` named tasks over every lane; every `long_every`-th one never ends."""
    for i in range(n):
        name = f"{prefix}-{i}"
        seconds = 3600.0 if long_every and i % long_every == 0 else 0.05
        lane = i % 3
        if lane == 0:
            offload.loop.options(name=name).spawn(sleep_async, name, seconds)
        elif lane == 1:
            offload.threads.options(name=name).spawn(sleep_sync, name, min(seconds, 2.0))
        else:
            offload.background.options(name=name).spawn(sleep_async, name, seconds)
    return {"spawned": n}
