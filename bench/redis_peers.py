"""Durable tasks on Redis (issue 14), the shared side: the tasks every contender runs,
the start gate, the worker processes, the three timed samples, and each Redis peer
(streaQ, SAQ, taskiq-redis's stream broker, arq, Celery) as a producer and a worker
command. bench/redis_bench.py is the driver (and offload's side).

The peers live in their own virtualenvs (`make bench-redis-peers`: arq pins a redis-py
older than taskiq-redis accepts, so build/venv-redis-peers/arq holds arq and
build/venv-redis-peers/main the others): a sample of a peer runs as
`<its venv>/bin/python bench/redis_peers.py sample SPEC`, prints one JSON line, and
imports nothing of offload. This module imports only the standard library at the top;
each peer is imported when it is used.

The tasks: `noop(t0)` (the first act reads `time.time()`, then appends one 36-byte
record "<t0> <started>" to `$REDIS_BENCH_OUT` with one `os.write` on an `O_APPEND`
descriptor: how completions are counted across processes) and `sleep1(t0)` (sleeps one
second, `await asyncio.sleep(1)` where the peer runs coroutines, `time.sleep(1)` for
Celery, then records "<t0> <finished>"). Each peer registers both, async where it can.

Worker processes are started the way each peer's documentation says (its command line
in a shell), each in its own session, and once set up they wait at a start gate
(`wait_for_go`, in the peer's start-up hook) until the parent opens it: start-up is
counted for no one. Per-task log lines are off for every peer (their own switches:
streaQ `silent=True`, SAQ's default level, taskiq and Celery `--log-level WARNING`, arq's
logger set to WARNING in its `on_startup`), as `huey_consumer -q` is in bench/durable.py.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar

OUT_ENV = "REDIS_BENCH_OUT"
GATE_ENV = "REDIS_BENCH_GATE"
URL_ENV = "REDIS_BENCH_URL"
CONCURRENCY_ENV = "REDIS_BENCH_CONCURRENCY"
#: One record: "%17.6f %17.6f\n".
RECORD = 36
#: Enqueues in flight at once where a peer batches with asyncio.gather.
CHUNK = 1_000
READY_TIMEOUT = 60.0  # s for the workers to be set up
STOP_TIMEOUT = 15.0  # s from SIGTERM to SIGKILL

HERE = Path(__file__).resolve().parent
_fd = -1


# --- the tasks ---------------------------------------------------------------------------------
def record(t0: float, at: float) -> None:
    global _fd
    if _fd < 0:
        _fd = os.open(os.environ[OUT_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_fd, b"%17.6f %17.6f\n" % (t0, at))


def noop(t0: float) -> None:
    record(t0, time.time())


async def anoop(t0: float) -> None:
    record(t0, time.time())


def sleep1(t0: float) -> None:
    time.sleep(1)
    record(t0, time.time())


async def asleep1(t0: float) -> None:
    await asyncio.sleep(1)
    record(t0, time.time())


def done_count(path: Path) -> int:
    try:
        return path.stat().st_size // RECORD
    except FileNotFoundError:
        return 0


def records(path: Path) -> list[tuple[float, float]]:
    out = []
    for line in path.read_bytes().splitlines():
        t0, at = line.split()
        out.append((float(t0), float(at)))
    return out


def wait_for_go() -> None:
    """A worker process's start gate, once it is set up: writes `ready.<pid>` in
    `$REDIS_BENCH_GATE` and waits for the file `go` there (polled every ms)."""
    gate = os.environ.get(GATE_ENV)
    if not gate:
        return
    Path(gate, f"ready.{os.getpid()}").touch()
    go = Path(gate, "go")
    while not go.exists():
        time.sleep(0.001)


def _concurrency() -> int:
    return int(os.environ.get(CONCURRENCY_ENV, "32"))


# --- worker processes -------------------------------------------------------------------------
class Workers:
    """Worker commands, each in its own session, held at the start gate until `go()`;
    `stop()`: SIGTERM to each session, SIGKILL to those still there after STOP_TIMEOUT."""

    def __init__(self, commands: list[list[str]], where: Path, ready: int) -> None:
        self.where = where
        self.log = where / "workers.log"
        env = {
            **os.environ,
            GATE_ENV: str(where),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
        }
        with open(self.log, "ab") as log:
            self.procs = [
                subprocess.Popen(
                    command, stdout=log, stderr=log, cwd=HERE, env=env, start_new_session=True
                )
                for command in commands
            ]
        # For the driver, should this process be killed before stop(): the groups to end.
        (where / "pgids").write_text("".join(f"{p.pid}\n" for p in self.procs))
        self._wait(lambda: len(list(where.glob("ready.*"))) >= ready, "ready", READY_TIMEOUT)

    def go(self) -> float:
        opened = time.time()
        (self.where / "go").touch()
        return opened

    def stop(self) -> None:
        for proc in self.procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc, signal.SIGKILL)  # children left behind by a manager too
            proc.wait()

    def wait_done(self, out: Path, n: int, timeout: float) -> None:
        self._wait(lambda: done_count(out) >= n, f"{n} tasks done", timeout)

    def _wait(self, until: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            dead = [p.returncode for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                self.stop()
                tail = self.log.read_text(errors="replace")[-2000:]
                why = f"worker exited {dead}" if dead else f"timeout {timeout:g} s"
                raise RuntimeError(f"waiting for {what}: {why}; log:\n{tail}")
            time.sleep(0.002)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


# --- contenders ----------------------------------------------------------------------------------
class Contender:
    """One contender's producer (`produce`) and worker commands."""

    name = ""
    #: Distribution names whose versions the results list.
    dists: tuple[str, ...] = ()
    #: How a batch is sent (said in the results).
    mode = ""

    def produce(self, batches: Sequence[tuple[str, Sequence[float]]]) -> list[float]:
        """Connect (untimed), then enqueue each batch: one task of its kind ("noop" or
        "sleep") per t0, returning once the store has accepted them all; the seconds
        each batch took."""
        raise NotImplementedError

    def worker_commands(self, processes: int, concurrency: int, kind: str) -> list[list[str]]:
        raise NotImplementedError

    def ready_count(self, processes: int) -> int:
        """How many processes pass the start gate."""
        return processes


class AsyncContender(Contender):
    """A peer whose client is asyncio: the producer's whole life in one coroutine (its
    connection's context managers are entered and left in one task)."""

    def produce(self, batches: Sequence[tuple[str, Sequence[float]]]) -> list[float]:
        return asyncio.run(self._produce(batches))

    async def _produce(self, batches: Sequence[tuple[str, Sequence[float]]]) -> list[float]:
        async with self.connected():
            out = []
            for kind, t0s in batches:
                start = time.perf_counter()
                await self.aenqueue(kind, t0s)
                out.append(time.perf_counter() - start)
            return out

    def connected(self) -> Any:
        """An async context manager: the producer's connection."""
        raise NotImplementedError

    async def aenqueue(self, kind: str, t0s: Sequence[float]) -> None:
        raise NotImplementedError


async def _gathered(enqueue: Callable[[float], Any], t0s: Sequence[float]) -> None:
    """`enqueue(t0)` for each t0, CHUNK at a time in `asyncio.gather`."""
    for i in range(0, len(t0s), CHUNK):
        await asyncio.gather(*(enqueue(t0) for t0 in t0s[i : i + CHUNK]))


# streaQ ----------------------------------------------------------------------------------------
@asynccontextmanager
async def _streaq_lifespan() -> AsyncIterator[None]:
    wait_for_go()  # the worker has connected and loaded its scripts
    yield None


def _build_streaq() -> Any:
    from streaq import Worker

    worker = Worker(
        redis_url=os.environ[URL_ENV], concurrency=_concurrency(), lifespan=_streaq_lifespan
    )
    worker.task(name="noop", silent=True)(anoop)
    worker.task(name="sleep", silent=True)(asleep1)
    return worker


class Streaq(AsyncContender):
    name = "streaQ"
    dists = ("streaq", "coredis")
    mode = f"Worker.enqueue_many (one pipeline) per {CHUNK:,} tasks"

    def connected(self) -> Any:
        self.worker = app("streaq_worker")
        return self.worker  # `async with worker:` connects, loads its Lua library

    async def aenqueue(self, kind: str, t0s: Sequence[float]) -> None:
        task = self.worker.registry[kind]
        for i in range(0, len(t0s), CHUNK):
            await self.worker.enqueue_many([task.enqueue(t0) for t0 in t0s[i : i + CHUNK]])

    def worker_commands(self, processes: int, concurrency: int, kind: str) -> list[list[str]]:
        # `streaq run MODULE:WORKER -w N` (N processes, multiprocessing).
        return [
            [sys.executable, "-m", "streaq", "run", "redis_peers:streaq_worker"]
            + ["--workers", str(processes)]
        ]


# SAQ ---------------------------------------------------------------------------------------------
async def saq_noop(ctx: Any, *, t0: float) -> None:
    record(t0, time.time())


async def saq_sleep(ctx: Any, *, t0: float) -> None:
    await asyncio.sleep(1)
    record(t0, time.time())


async def _saq_startup(ctx: Any) -> None:
    wait_for_go()


def _build_saq() -> dict[str, Any]:
    from saq import Queue

    return {
        "queue": Queue.from_url(os.environ[URL_ENV]),
        "functions": [saq_noop, saq_sleep],
        "concurrency": _concurrency(),
        "startup": _saq_startup,
    }


class Saq(AsyncContender):
    name = "SAQ"
    dists = ("saq", "redis")
    mode = f"Queue.enqueue in asyncio.gather, {CHUNK:,} at a time (no batch API)"

    @asynccontextmanager
    async def connected(self) -> AsyncIterator[None]:
        self.queue = app("saq_settings")["queue"]
        await self.queue.connect()
        try:
            yield
        finally:
            await self.queue.disconnect()

    async def aenqueue(self, kind: str, t0s: Sequence[float]) -> None:
        name = "saq_noop" if kind == "noop" else "saq_sleep"
        await _gathered(lambda t0: self.queue.enqueue(name, t0=t0), t0s)

    def worker_commands(self, processes: int, concurrency: int, kind: str) -> list[list[str]]:
        # `saq MODULE.SETTINGS --workers N`
        return [
            [sys.executable, "-m", "saq", "redis_peers.saq_settings", "--workers", str(processes)]
        ]


# taskiq-redis, stream broker ---------------------------------------------------------------------
def _build_taskiq() -> Any:
    from taskiq import TaskiqEvents, TaskiqState
    from taskiq_redis import RedisStreamBroker

    broker = RedisStreamBroker(url=os.environ[URL_ENV])
    broker.task(task_name="noop")(anoop)
    broker.task(task_name="sleep")(asleep1)

    async def gate(state: TaskiqState) -> None:
        wait_for_go()

    broker.add_event_handler(TaskiqEvents.WORKER_STARTUP, gate)
    return broker


class Taskiq(AsyncContender):
    name = "taskiq-redis"
    dists = ("taskiq", "taskiq-redis", "redis")
    mode = f"task.kiq in asyncio.gather, {CHUNK:,} at a time (no batch API)"

    @asynccontextmanager
    async def connected(self) -> AsyncIterator[None]:
        self.broker = app("taskiq_broker")
        await self.broker.startup()  # declares the consumer group before any task
        try:
            yield
        finally:
            await self.broker.shutdown()

    async def aenqueue(self, kind: str, t0s: Sequence[float]) -> None:
        task = self.broker.find_task(kind)
        await _gathered(task.kiq, t0s)

    def worker_commands(self, processes: int, concurrency: int, kind: str) -> list[list[str]]:
        # `taskiq worker MODULE:BROKER --workers N --max-async-tasks C`
        return [
            [sys.executable, "-m", "taskiq", "worker", "redis_peers:taskiq_broker"]
            + ["--workers", str(processes), "--max-async-tasks", str(concurrency)]
            + ["--log-level", "WARNING"]
        ]


# arq ----------------------------------------------------------------------------------------------
async def arq_noop(ctx: Any, t0: float) -> None:
    record(t0, time.time())


async def arq_sleep(ctx: Any, t0: float) -> None:
    await asyncio.sleep(1)
    record(t0, time.time())


async def _arq_startup(ctx: Any) -> None:
    logging.getLogger("arq").setLevel(logging.WARNING)  # arq's CLI logs each job at INFO
    wait_for_go()


def _build_arq() -> type:
    from arq.connections import RedisSettings

    class ArqSettings:
        functions: ClassVar[list[Any]] = [arq_noop, arq_sleep]
        redis_settings = RedisSettings.from_dsn(os.environ[URL_ENV])
        max_jobs = _concurrency()
        on_startup = _arq_startup

    return ArqSettings


class Arq(AsyncContender):
    name = "arq"
    dists = ("arq", "redis")
    mode = f"ArqRedis.enqueue_job in asyncio.gather, {CHUNK:,} at a time (no batch API)"

    @asynccontextmanager
    async def connected(self) -> AsyncIterator[None]:
        from arq import create_pool

        self.pool = await create_pool(app("arq_settings").redis_settings)
        try:
            yield
        finally:
            await self.pool.aclose()

    async def aenqueue(self, kind: str, t0s: Sequence[float]) -> None:
        name = "arq_noop" if kind == "noop" else "arq_sleep"
        await _gathered(lambda t0: self.pool.enqueue_job(name, t0), t0s)

    def worker_commands(self, processes: int, concurrency: int, kind: str) -> list[list[str]]:
        # `arq MODULE.WorkerSettings`, one process each (arq has no --workers).
        return [[sys.executable, "-m", "arq", "redis_peers.arq_settings"]] * processes


# Celery ------------------------------------------------------------------------------------------
def _build_celery() -> Any:
    from celery import Celery
    from celery.signals import worker_ready

    celery = Celery("redis_peers", broker=os.environ[URL_ENV])
    celery.conf.broker_connection_retry_on_startup = True
    celery.task(name="noop", ignore_result=True)(noop)
    celery.task(name="sleep", ignore_result=True)(sleep1)
    worker_ready.connect(lambda **kwargs: wait_for_go(), weak=False)
    return celery


class Celery(Contender):
    name = "Celery"
    dists = ("celery", "kombu", "redis")
    mode = "apply_async in a loop on one producer connection (no batched publish)"

    def produce(self, batches: Sequence[tuple[str, Sequence[float]]]) -> list[float]:
        celery = app("celery_app")
        out = []
        with celery.producer_or_acquire() as producer:
            producer.connection.ensure_connection()
            for kind, t0s in batches:
                task = celery.tasks[kind]
                start = time.perf_counter()
                for t0 in t0s:
                    task.apply_async((t0,), producer=producer)
                out.append(time.perf_counter() - start)
        return out

    def worker_commands(self, processes: int, concurrency: int, kind: str) -> list[list[str]]:
        # No-op tasks: the prefork pool (the default), one child process per worker
        # process; sleep(1) tasks: the threads pool with `concurrency` threads.
        pool = ("-P", "prefork", "-c", str(processes))
        if kind == "sleep":
            pool = ("-P", "threads", "-c", str(concurrency))
        return [
            [sys.executable, "-m", "celery", "-A", "redis_peers:celery_app", "worker"]
            + [*pool, "--loglevel", "WARNING"]
        ]

    def ready_count(self, processes: int) -> int:
        return 1  # the main process's worker_ready: it hands the tasks to its pool


PEERS: dict[str, type[Contender]] = {c.name: c for c in (Streaq, Saq, Taskiq, Arq, Celery)}
#: Which virtualenv under build/venv-redis-peers/ holds each peer.
VENV = {"streaQ": "main", "SAQ": "main", "taskiq-redis": "main", "arq": "arq", "Celery": "main"}

# The apps the workers' command lines name, built on first use (from the environment).
_BUILDERS: dict[str, Callable[[], Any]] = {
    "streaq_worker": _build_streaq,
    "saq_settings": _build_saq,
    "taskiq_broker": _build_taskiq,
    "arq_settings": _build_arq,
    "celery_app": _build_celery,
}
_apps: dict[str, Any] = {}


def app(name: str) -> Any:
    if name not in _apps:
        _apps[name] = _BUILDERS[name]()
    return _apps[name]


def __getattr__(name: str) -> Any:  # `redis_peers:streaq_worker` and the like
    if name in _BUILDERS:
        return app(name)
    raise AttributeError(name)


# --- the samples ----------------------------------------------------------------------------------
WARMUP = 1_000  # untimed enqueues before the timed ones


def enqueue_sample(contender: Contender, n: int) -> dict[str, Any]:
    _, elapsed = contender.produce([("noop", [0.0] * WARMUP), ("noop", [0.0] * n)])
    return {"rate": n / elapsed, "seconds": elapsed}


def _run_queued(
    contender: Contender, where: Path, kind: str, n: int, processes: int, concurrency: int
) -> tuple[float, list[tuple[float, float]]]:
    """Enqueue n tasks (untimed), start the workers, open the gate, wait for all n;
    (gate opened, records)."""
    contender.produce([(kind, [0.0] * n)])
    out = Path(os.environ[OUT_ENV])
    os.environ[CONCURRENCY_ENV] = str(concurrency)
    workers = Workers(
        contender.worker_commands(processes, concurrency, kind),
        where,
        contender.ready_count(processes),
    )
    try:
        opened = workers.go()
        workers.wait_done(out, n, timeout=60 + n / 200 if kind == "noop" else 120)
    finally:
        workers.stop()
    return opened, records(out)


def e2e_sample(
    contender: Contender, where: Path, n: int, processes: int, concurrency: int
) -> dict[str, Any]:
    opened, got = _run_queued(contender, where, "noop", n, processes, concurrency)
    starts = sorted(at for _, at in got)
    return {"rate": n / (starts[n - 1] - opened), "runs": len(got)}


def sleep_sample(contender: Contender, where: Path, n: int, concurrency: int) -> dict[str, Any]:
    opened, got = _run_queued(contender, where, "sleep", n, 1, concurrency)
    ends = sorted(at for _, at in got)
    return {"seconds": ends[n - 1] - opened, "runs": len(got)}


def run_sample(contender: Contender, spec: dict[str, Any]) -> dict[str, Any]:
    """One sample, in this process: spec from the driver (bench/redis_bench.py)."""
    where = Path(spec["where"])
    os.environ[URL_ENV] = spec["url"]
    os.environ[OUT_ENV] = str(where / "records")
    os.environ[CONCURRENCY_ENV] = str(spec["concurrency"])
    phase = spec["phase"]
    if phase == "enqueue":
        return enqueue_sample(contender, spec["n"])
    if phase == "e2e":
        return e2e_sample(contender, where, spec["n"], spec["processes"], spec["concurrency"])
    if phase == "sleep":
        return sleep_sample(contender, where, spec["n"], spec["concurrency"])
    raise ValueError(f"unknown phase {phase!r}")


def versions(names: Sequence[str]) -> dict[str, dict[str, str | None]]:
    """Each named peer's packages and their versions, in this interpreter."""
    out: dict[str, dict[str, str | None]] = {}
    for name in names:
        out[name] = {}
        for dist in PEERS[name].dists:
            try:
                out[name][dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                out[name][dist] = None
    return out


def main() -> int:
    if sys.argv[1:2] == ["sample"]:
        spec = json.loads(sys.argv[2])
        print(json.dumps(run_sample(PEERS[spec["contender"]](), spec)))
        return 0
    if sys.argv[1:2] == ["versions"]:
        print(json.dumps(versions(sys.argv[2:])))
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
