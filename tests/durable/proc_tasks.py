"""Task functions the worker processes of test_processes.py import (`--import`).

Each records its runs and its effect in an "effects" SQLite file (its own file, not
the durable store): `runs(task_key, pid, t)` gets a row at the start of every run (so a
run cut short by a kill still shows), `effects(task_key PRIMARY KEY, pid, t)` gets one
row per idempotency key, written with INSERT OR IGNORE once the work is done: the
usual way to make an at-least-once task's effect happen exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import threading
import time

_local = threading.local()

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (task_key TEXT NOT NULL, pid INTEGER NOT NULL, t REAL NOT NULL);
CREATE TABLE IF NOT EXISTS effects (
    task_key TEXT PRIMARY KEY, pid INTEGER NOT NULL, t REAL NOT NULL
);
"""


def connect(path: str) -> sqlite3.Connection:
    """A connection to the effects file (WAL, a long busy timeout: 3 processes write)."""
    db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    db.execute("PRAGMA busy_timeout = 30000")
    db.execute("PRAGMA synchronous = NORMAL")
    return db


def create(path: str) -> None:
    """Make the effects file (the test does, before any worker starts)."""
    db = connect(path)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.executescript(SCHEMA)
    finally:
        db.close()


def _db(path: str) -> sqlite3.Connection:
    conns: dict[str, sqlite3.Connection] | None = getattr(_local, "conns", None)
    if conns is None:
        conns = _local.conns = {}
    db = conns.get(path)
    if db is None:
        db = conns[path] = connect(path)
    return db


def record_run(path: str, key: str) -> None:
    _db(path).execute(
        "INSERT INTO runs (task_key, pid, t) VALUES (?, ?, ?)", (key, os.getpid(), time.time())
    )


def record_effect(path: str, key: str) -> None:
    _db(path).execute(
        "INSERT OR IGNORE INTO effects (task_key, pid, t) VALUES (?, ?, ?)",
        (key, os.getpid(), time.time()),
    )


def work(path: str, key: str, seconds: float) -> str:
    """A sync task: runs on the worker's threads lane."""
    record_run(path, key)
    time.sleep(seconds)
    record_effect(path, key)
    return key


def work_here(path: str, key: str, seconds: float) -> str:
    """`work`, returning "key@pid": the result in the store tells which run's ack was
    written."""
    work(path, key, seconds)
    return f"{key}@{os.getpid()}"


def work_longer_again(path: str, key: str, first: float, later: float) -> str:
    """`work` that takes `first` seconds on its first run, `later` on any other."""
    record_run(path, key)
    (runs,) = _db(path).execute("SELECT count(*) FROM runs WHERE task_key = ?", (key,)).fetchone()
    time.sleep(first if runs == 1 else later)
    record_effect(path, key)
    return key


async def asleep(path: str, key: str, seconds: float) -> str:
    """An async task that waits (runs on the worker's loop)."""
    record_run(path, key)
    await asyncio.sleep(seconds)
    record_effect(path, key)
    return key


async def block_loop(path: str, key: str, seconds: float) -> str:
    """An async task that blocks its worker's event loop for `seconds`."""
    record_run(path, key)
    time.sleep(seconds)  # noqa: ASYNC251 (on purpose: the loop blocks, the store thread not)
    record_effect(path, key)
    return key


def kill_worker(path: str, key: str) -> None:
    """A poison task: SIGKILLs the process that runs it, every attempt."""
    record_run(path, key)
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)  # not reached
