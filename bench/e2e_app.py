"""The end-to-end benchmark's app: one endpoint, served plain and with background work.

GET /plain                      the endpoint alone
GET /{work}/fastapi             + FastAPI's BackgroundTasks.add_task(work)
GET /{work}/offload-background  + offload.fastapi.BackgroundTasks.add_task(work)
GET /{work}/offload-detached    + the same, detached (the request ends right after spawning)
GET /{work}/offload-spawn       + offload.spawn(work)
GET /drain                      waits for offload's pending work (between wrk runs)

work: `async` (an async no-op analytics call) or `blocking` (time.sleep(0.001)).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import fastapi

import offload
import offload.fastapi

app = fastapi.FastAPI(lifespan=offload.fastapi.lifespan())


async def track(event: str) -> None:
    """An analytics call whose client is async (a no-op here)."""


def audit(event: str) -> None:
    """A blocking call: 1 ms of I/O."""
    time.sleep(0.001)


WORK: dict[str, Callable[[str], Any]] = {"async": track, "blocking": audit}


def body() -> dict[str, bool]:
    return {"ok": True}


@app.get("/plain")
async def plain() -> dict[str, bool]:
    return body()


@app.get("/drain")
async def drain() -> dict[str, int]:
    return {"unfinished": len(await offload.drain(30))}


def _routes(name: str, work: Callable[[str], Any]) -> None:
    async def with_fastapi(tasks: fastapi.BackgroundTasks) -> dict[str, bool]:
        tasks.add_task(work, "hit")
        return body()

    async def with_offload(tasks: offload.fastapi.BackgroundTasks) -> dict[str, bool]:
        tasks.add_task(work, "hit")
        return body()

    async def with_offload_detached(tasks: offload.fastapi.BackgroundTasks) -> dict[str, bool]:
        tasks.detach = True
        tasks.add_task(work, "hit")
        return body()

    async def with_spawn() -> dict[str, bool]:
        offload.spawn(work, "hit")
        return body()

    handlers: dict[str, Callable[..., Awaitable[dict[str, bool]]]] = {
        "fastapi": with_fastapi,
        "offload-background": with_offload,
        "offload-detached": with_offload_detached,
        "offload-spawn": with_spawn,
    }
    for variant, handler in handlers.items():
        app.add_api_route(f"/{name}/{variant}", handler, methods=["GET"])


for _name, _work in WORK.items():
    _routes(_name, _work)
