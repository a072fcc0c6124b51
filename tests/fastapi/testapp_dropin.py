"""FastAPI's own tutorial app with one import changed and no lifespan (the drop-in promise).

Each task appends a line to $TESTAPP_OUT when it finishes; the subprocess tests SIGTERM
the server 0.1 s after the response and check that every line is there.
"""

from __future__ import annotations

import asyncio
import os
import time

from fastapi import FastAPI

from offload.fastapi import BackgroundTasks  # was: from fastapi import BackgroundTasks

app = FastAPI()
OUT = os.environ["TESTAPP_OUT"]


def write_line(line: str) -> None:
    with open(OUT, "a", encoding="utf-8") as out:
        out.write(line + "\n")


def slow_sync(name: str, seconds: float) -> None:
    time.sleep(seconds)
    write_line(name)


async def slow_async(name: str, seconds: float) -> None:
    await asyncio.sleep(seconds)
    write_line(name)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"ok": "yes"}


@app.post("/send/{who}")
async def send(who: str, background_tasks: BackgroundTasks, seconds: float = 1.0) -> dict[str, str]:
    background_tasks.add_task(slow_sync, f"sync {who}", seconds)
    background_tasks.add_task(slow_async, f"async {who}", seconds)
    return {"message": "sent in the background"}
