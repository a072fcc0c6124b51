"""The app of test_uvicorn_workers.py: `uvicorn --workers 4` processes sharing one
durable store (OFFLOAD_STORE), each recording the runs it makes in EFFECTS_DB."""

from __future__ import annotations

import os
import sqlite3
import time

from fastapi import FastAPI

import offload
import offload.fastapi


def _effects() -> sqlite3.Connection:
    db = sqlite3.connect(os.environ["EFFECTS_DB"], timeout=30, isolation_level=None)
    db.execute("PRAGMA busy_timeout=30000")
    return db


@offload.task(durable=True, retries=3)
def record(n: int) -> int:
    time.sleep(0.01)  # a backlog builds up, and the other processes take their share
    db = _effects()
    try:
        db.execute("INSERT INTO runs (n, pid) VALUES (?, ?)", (n, os.getpid()))
    finally:
        db.close()
    return n


app = FastAPI(lifespan=offload.fastapi.lifespan(drain_timeout=5))


@app.post("/jobs/{n}")
async def make_job(n: int) -> dict[str, object]:
    task = record.spawn(n)
    await task.persisted()
    return {"id": task.id, "pid": os.getpid()}
