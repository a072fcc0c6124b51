"""Durable tasks' benchmark, the shared side: the task every contender runs, the Huey
app, the litequeue worker loop, and each peer's producer and worker commands.

Every contender runs the same module-level function, `work(t0)`: its first act reads
`time.time()`, then it appends one fixed-width record `"<t0> <started>\\n"` to the file
named by `$DURABLE_BENCH_OUT` (one `os.write` on an `O_APPEND` descriptor, the side
channel that counts completions across worker processes; ~2 µs, the same for every
contender). `t0` is the enqueue time (`time.time()` just before the enqueue call) in
the latency runs, 0 elsewhere.

* **Huey** (`SqliteHuey`, results off): the app below, built at import from
  `$DURABLE_BENCH_HUEY_DB` so that the consumer (`huey_consumer durable_peers.huey -k
  process -w N -q`) finds it. Durability: Huey's `fsync=True` sets `synchronous=FULL`
  (our "full"); left unset, Huey keeps SQLite's default, which in WAL mode is FULL too,
  so "normal" (`synchronous=NORMAL`, what offload and litequeue use by default) takes a
  three-line storage subclass.
* **litequeue** (`LiteQueue(path)`): `put(json)` per task. It has no worker: ours is the
  minimal loop `pop()` -> run -> `done(message_id)`, sleeping 5 ms when the queue is
  empty, and trying a `pop()` or `done()` again when it raises "database is locked". It sets `synchronous=NORMAL` itself; "full" sets `PRAGMA synchronous=FULL` on
  its (public) connection after opening.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from huey import SqliteHuey
from huey.storage import SqliteStorage
from litequeue import LiteQueue

OUT_ENV = "DURABLE_BENCH_OUT"
GATE_ENV = "DURABLE_BENCH_GATE"
HUEY_DB_ENV = "DURABLE_BENCH_HUEY_DB"
DURABILITY_ENV = "DURABLE_BENCH_DURABILITY"
#: One record of `work`: "%17.6f %17.6f\n".
RECORD = 36
LITEQUEUE_POLL = 0.005  # our litequeue worker's sleep when the queue is empty, s

_fd = -1
_R = TypeVar("_R")


def work(t0: float) -> None:
    """The no-op task: records (enqueue time, start time) in the side channel."""
    global _fd
    started = time.time()
    if _fd < 0:
        _fd = os.open(os.environ[OUT_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_fd, b"%17.6f %17.6f\n" % (t0, started))


def done_count(path: Path) -> int:
    try:
        return path.stat().st_size // RECORD
    except FileNotFoundError:
        return 0


def records(path: Path) -> list[tuple[float, float]]:
    """Every (t0, started) written by `work` so far."""
    out = []
    for line in path.read_bytes().splitlines():
        t0, started = line.split()
        out.append((float(t0), float(started)))
    return out


def wait_for_go() -> None:
    """The start gate of a worker process, once it is set up: writes `ready.<pid>` in
    `$DURABLE_BENCH_GATE` and waits for the file `go` there (polled every ms)."""
    gate = os.environ.get(GATE_ENV)
    if not gate:
        return
    Path(gate, f"ready.{os.getpid()}").touch()
    go = Path(gate, "go")
    while not go.exists():
        time.sleep(0.001)


# --- Huey ------------------------------------------------------------------------------------
class NormalSqliteStorage(SqliteStorage):
    """Huey's SQLite storage with `synchronous=NORMAL` (its `fsync` switch knows only
    FULL (`True`), OFF (`False`) and SQLite's default (unset: FULL in WAL mode))."""

    def _create_connection(self) -> Any:
        conn = super()._create_connection()
        conn.execute("pragma synchronous=1")
        return conn


def make_huey(path: str, durability: str) -> SqliteHuey:
    if durability == "full":
        return SqliteHuey(filename=path, results=False, fsync=True)
    return SqliteHuey(filename=path, results=False, storage_class=NormalSqliteStorage)


#: The consumer's app (`durable_peers.huey`): built only where the environment names a
#: database (the Huey producer and its consumers).
huey = (
    make_huey(os.environ[HUEY_DB_ENV], os.environ.get(DURABILITY_ENV, "normal"))
    if HUEY_DB_ENV in os.environ
    else None
)
huey_work: Callable[[float], Any] | None = None
if huey is not None:
    huey_work = huey.task()(work)
    huey.on_startup()(wait_for_go)  # runs in each worker process as it starts


def huey_enqueuer() -> Callable[[float], None]:
    assert huey_work is not None, f"set ${HUEY_DB_ENV}"
    return huey_work


def huey_consumer(workers: int) -> list[str]:
    """The consumer command: `workers` processes (`-k process`), quiet logging."""
    return [
        *(sys.executable, "-m", "huey.bin.huey_consumer", "durable_peers.huey"),
        *("-k", "process", "-w", str(workers), "-q"),
    ]


# --- litequeue ---------------------------------------------------------------------------------
TASKS: dict[str, Callable[..., None]] = {"work": work}


def open_litequeue(path: str, durability: str) -> LiteQueue:
    queue = LiteQueue(path)
    if durability == "full":
        queue.conn.execute("PRAGMA synchronous = FULL")
    return queue


def litequeue_enqueuer(path: str, durability: str) -> Callable[[float], None]:
    put = open_litequeue(path, durability).put

    def enqueue(t0: float) -> None:
        put(json.dumps({"task": "work", "args": [t0]}))

    return enqueue


def litequeue_worker(path: str, durability: str) -> None:
    """Our minimal litequeue worker: pop, run, done; SIGTERM stops it between tasks."""
    queue = open_litequeue(path, durability)
    wait_for_go()
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    while not stopping:
        message = _unlocked(queue.pop)
        if message is None:
            time.sleep(LITEQUEUE_POLL)
            continue
        body = json.loads(message.data)
        TASKS[body["task"]](*body["args"])
        _unlocked(functools.partial(queue.done, message.message_id))
    queue.close()


def _unlocked(call: Callable[[], _R]) -> _R:
    """`call()`, again while it fails with "database is locked": with 3 workers,
    litequeue's `BEGIN IMMEDIATE` can wait past sqlite3's 5 s busy timeout and raise."""
    while True:
        try:
            return call()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise


def litequeue_worker_command(path: str, durability: str) -> list[str]:
    return [sys.executable, "-c", _LITEQUEUE_MAIN, path, durability]


_LITEQUEUE_MAIN = "import sys, durable_peers; durable_peers.litequeue_worker(*sys.argv[1:3])"
