"""Durable tasks (issue 13): offload's SQLite store against Huey (`SqliteHuey`) and
litequeue, on the same disk, for `durability` "normal" and "full".

    python bench/run.py --only durable --out bench/results-durable.json   # JSON + PNG
    python bench/durable.py [--quick] [--rounds R] [--only e2e] [--contenders Huey]  # print

Metrics (each sample a fresh interpreter, `python bench/durable.py sample SPEC`, in a
fresh directory under build/durable-bench/; the shared task and the peers' commands are
in bench/durable_peers.py):

* **enqueue**: n tasks (100,000; quick 10,000) from one thread, after 1,000 untimed;
  offload: `rt.durable.spawn(work, 0.0)` in a producer-only runtime
  (`durable_concurrency=0`), then `rt.durable.flush_sync()`, inside the timing. Huey and
  litequeue with durability "full": 20,000 (quick 2,000; see `Sizes`).
* **end to end**: 5,000 no-op tasks (quick 2,000) enqueued first (untimed), then 1 or 3
  worker processes start and wait at a start gate once set up; tasks/s = n / (last
  task's start - gate opened), from the tasks' own records: interpreter start-up is not
  counted for anyone.
* **latency**: one worker process, warmed up by 20 tasks, then tasks enqueued at a
  steady rate (500 at 200/s; quick 100); each task's start time minus the `time.time()`
  read just before its enqueue call; p50 and p99.
* **RSS** (offload only, durability normal, one sample): a producer-only process
  enqueues 1,000,000 tasks (quick 100,000), `flush_sync()` every 100,000 (quick
  10,000), VmRSS after each flush; then a worker process starts on that backlog and its
  VmRSS is read 2 s and 5 s after its gate opened (with how many tasks it had run).

offload's workers are `python bench/durable.py worker STORE DURABILITY`: a process that
makes `offload.Runtime(store=..., durability=...)` (durable work on, default
concurrency) and waits for SIGTERM.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import durable_peers
from common import Benchmark, interleave, make_benchmark, percentile
from durable_peers import GATE_ENV, OUT_ENV, done_count, records, wait_for_go, work

HERE = Path(__file__).resolve().parent
SCRATCH = HERE.parent / "build" / "durable-bench"
CONTENDERS = ("offload", "Huey", "litequeue")
DURABILITIES = ("normal", "full")
PEERS = CONTENDERS[1:]
#: Rounds of the full run (each round runs every case once, interleaved); quick: 1.
ROUNDS = 3
WARMUP = 1_000  # untimed enqueues before the timed ones
LATENCY_WARMUP = 20
WORKER_RSS_AT = (2.0, 5.0)  # s after a worker starts on the RSS phase's backlog


@dataclass(frozen=True)
class Sizes:
    enqueue: int
    #: The peers' enqueue with durability "full": each of their enqueues is its own
    #: fsynced commit, so the rate doesn't depend on n, and 100,000 would take ~15 s each.
    enqueue_peers_full: int
    e2e: int
    latency: int
    latency_rate: float  # tasks/s
    rss: int
    rss_chunk: int

    @staticmethod
    def of(quick: bool) -> Sizes:
        if quick:
            return Sizes(10_000, 2_000, 2_000, 100, 200.0, 100_000, 10_000)
        return Sizes(100_000, 20_000, 5_000, 500, 200.0, 1_000_000, 100_000)


# --- inside a sample's process ------------------------------------------------------------
Enqueue = Callable[[float], object]


def _vm_rss(pid: int | str = "self") -> int:
    """VmRSS of a process, bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def _store(where: Path) -> str:
    return f"sqlite:///{where / 'offload.db'}"


class Producer:
    """One contender's enqueue side: `enqueue(t0)`, `flush()`, `close()`."""

    def __init__(self, contender: str, durability: str, where: Path) -> None:
        self._close: Callable[[], object] = lambda: None
        self.flush: Callable[[], object] = lambda: None
        if contender == "offload":
            import offload

            rt = offload.Runtime(store=_store(where), durable_concurrency=0, durability=durability)
            # Open the store now, as the peers' constructors do: the latency phase's
            # worker opens it after this (two processes turning a fresh file to WAL at
            # the same moment can fail with "database is locked").
            rt.durable.start()
            self.enqueue: Enqueue = functools.partial(rt.durable.spawn, work)
            self.flush = rt.durable.flush_sync
            self._close = functools.partial(rt.close, 60)
        elif contender == "Huey":
            self.enqueue = durable_peers.huey_enqueuer()
        else:
            self.enqueue = durable_peers.litequeue_enqueuer(str(where / "litequeue.db"), durability)

    def close(self) -> None:
        self.flush()
        self._close()


def _worker_commands(contender: str, durability: str, where: Path, n: int) -> list[list[str]]:
    if contender == "offload":
        one = [sys.executable, __file__, "worker", _store(where), durability]
        return [one] * n
    if contender == "Huey":
        return [durable_peers.huey_consumer(n)]
    return [durable_peers.litequeue_worker_command(str(where / "litequeue.db"), durability)] * n


class Workers:
    """Worker processes, each in its own session, held at the start gate
    (`durable_peers.wait_for_go`) until `go()`; stopped by SIGTERM (then SIGKILL)."""

    def __init__(self, commands: list[list[str]], where: Path, processes: int) -> None:
        self.where = where
        self.log = where / "workers.log"
        with open(self.log, "ab") as log:
            self.procs = [
                subprocess.Popen(command, stdout=log, stderr=log, cwd=HERE, start_new_session=True)
                for command in commands
            ]
        self._wait(lambda: len(list(where.glob("ready.*"))) >= processes, "ready", 60)

    def go(self) -> float:
        """Open the gate; the time it opened (`time.time()`)."""
        opened = time.time()
        (self.where / "go").touch()
        return opened

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
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


def enqueue_sample(contender: str, durability: str, where: Path, n: int) -> dict[str, Any]:
    producer = Producer(contender, durability, where)
    enqueue = producer.enqueue
    for _ in range(WARMUP):
        enqueue(0.0)
    producer.flush()
    start = time.perf_counter()
    for _ in range(n):
        enqueue(0.0)
    producer.flush()
    elapsed = time.perf_counter() - start
    producer.close()
    return {"rate": n / elapsed}


def e2e_sample(
    contender: str, durability: str, where: Path, n: int, workers: int
) -> dict[str, Any]:
    producer = Producer(contender, durability, where)
    for _ in range(n):
        producer.enqueue(0.0)
    producer.close()
    out = Path(os.environ[OUT_ENV])
    running = Workers(_worker_commands(contender, durability, where, workers), where, workers)
    try:
        opened = running.go()
        running.wait_done(out, n, timeout=120 + n / 100)
    finally:
        running.stop()
    starts = sorted(started for _, started in records(out))
    return {
        "rate": n / (starts[n - 1] - opened),
        "runs": len(starts),  # > n: some task ran twice
    }


def latency_sample(
    contender: str, durability: str, where: Path, n: int, rate: float
) -> dict[str, Any]:
    out = Path(os.environ[OUT_ENV])
    running = Workers(_worker_commands(contender, durability, where, 1), where, 1)
    producer = Producer(contender, durability, where)
    try:
        running.go()
        for _ in range(LATENCY_WARMUP):
            producer.enqueue(time.time())
        running.wait_done(out, LATENCY_WARMUP, timeout=120)
        enqueue = producer.enqueue
        start = time.monotonic()
        for i in range(n):
            pause = start + i / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            enqueue(time.time())
        running.wait_done(out, LATENCY_WARMUP + n, timeout=120)
    finally:
        producer.close()
        running.stop()
    waits = [(started - t0) * 1e3 for t0, started in records(out)[LATENCY_WARMUP:]]
    return {"p50": percentile(waits, 50), "p99": percentile(waits, 99), "max": max(waits)}


def rss_sample(durability: str, where: Path, n: int, chunk: int) -> dict[str, Any]:
    """VmRSS of a producer after each `flush_sync()` of `chunk` tasks up to `n` queued,
    the store's size, then a worker's VmRSS 2 s and 5 s into that backlog."""
    producer = Producer("offload", durability, where)
    enqueue = producer.enqueue
    before = _vm_rss()
    chunks = []
    for _ in range(n // chunk):
        for _ in range(chunk):
            enqueue(0.0)
        producer.flush()
        chunks.append(_vm_rss())
    producer.close()
    db = sum(p.stat().st_size for p in where.glob("offload.db*"))
    out = Path(os.environ[OUT_ENV])
    running = Workers(_worker_commands("offload", durability, where, 1), where, 1)
    try:
        opened = running.go()
        worker = []
        for at in WORKER_RSS_AT:
            time.sleep(max(0.0, opened + at - time.time()))
            worker.append((_vm_rss(running.procs[0].pid), done_count(out)))
    finally:
        running.stop()
    return {"producer_start": before, "producer_chunks": chunks, "db_bytes": db, "worker": worker}


def sample_main(spec: dict[str, Any]) -> dict[str, Any]:
    where = Path(spec["where"])
    phase, contender, durability = spec["phase"], spec["contender"], spec["durability"]
    if phase == "enqueue":
        return enqueue_sample(contender, durability, where, spec["n"])
    if phase == "e2e":
        return e2e_sample(contender, durability, where, spec["n"], spec["workers"])
    if phase == "latency":
        return latency_sample(contender, durability, where, spec["n"], spec["rate"])
    if phase == "rss":
        return rss_sample(durability, where, spec["n"], spec["chunk"])
    raise ValueError(phase)


def worker_main(store: str, durability: str) -> None:
    """An offload worker process: a runtime on the store, until SIGTERM."""
    import offload

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    rt = offload.Runtime(store=store, durability=durability)
    wait_for_go()
    rt.durable.start()  # opens the store and works its queue (no event loop here)
    stop.wait()
    rt.close(10)


# --- in the parent -----------------------------------------------------------------------------
def _sample(phase: str, contender: str, durability: str, **spec: Any) -> dict[str, Any]:
    """Run one sample in a fresh interpreter and a fresh directory; its JSON result."""
    SCRATCH.mkdir(parents=True, exist_ok=True)
    where = Path(tempfile.mkdtemp(prefix=f"{phase}-{contender}-", dir=SCRATCH))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
        OUT_ENV: str(where / "records"),
        GATE_ENV: str(where),
        durable_peers.HUEY_DB_ENV: str(where / "huey.db"),
        durable_peers.DURABILITY_ENV: durability,
    }
    spec |= {"phase": phase, "contender": contender, "durability": durability}
    spec["where"] = str(where)
    try:
        done = subprocess.run(
            [sys.executable, __file__, "sample", json.dumps(spec)],
            check=False,
            env=env,
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{phase} {contender} {durability}: {done.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result
    finally:
        shutil.rmtree(where, ignore_errors=True)


def _name(contender: str, durability: str) -> str:
    return f"{contender}, {durability}"


def _cases(
    phase: str, contenders: tuple[str, ...], **spec: Any
) -> list[tuple[str, Callable[[], dict[str, Any]]]]:
    return [
        (_name(c, d), functools.partial(_sample, phase, c, d, **spec))
        for d in DURABILITIES
        for c in contenders
    ]


def _pairs(contenders: tuple[str, ...], peer_over_offload: bool = False) -> list[tuple[str, str]]:
    if "offload" not in contenders:
        return []
    peers = [p for p in PEERS if p in contenders]
    pairs = [(_name("offload", d), _name(p, d)) for d in DURABILITIES for p in peers]
    return [(b, a) for a, b in pairs] if peer_over_offload else pairs


def _values(samples: dict[str, list[dict[str, Any]]], field: str) -> dict[str, list[float]]:
    return {name: [s[field] for s in got] for name, got in samples.items()}


PHASES = ("enqueue", "e2e", "latency", "rss")


def run(
    rounds: int,
    quick: bool,
    phases: tuple[str, ...] = PHASES,
    contenders: tuple[str, ...] = CONTENDERS,
) -> list[Benchmark]:
    sizes = Sizes.of(quick)
    out = []
    if "enqueue" in phases:
        out.append(_enqueue(rounds, sizes, contenders))
    if "e2e" in phases:
        out += _e2e(rounds, sizes, contenders)
    if "latency" in phases:
        out += _latency(rounds, sizes, contenders)
    if "rss" in phases and "offload" in contenders:
        out.append(_rss(sizes))
    return out


def _enqueue(rounds: int, sizes: Sizes, contenders: tuple[str, ...]) -> Benchmark:
    cases = [
        (name, functools.partial(sample, n=sizes.enqueue))
        if name.startswith("offload") or name.endswith("normal")
        else (name, functools.partial(sample, n=sizes.enqueue_peers_full))
        for name, sample in _cases("enqueue", contenders)
    ]
    got = interleave(cases, rounds)
    return make_benchmark(
        "durable_enqueue",
        f"durable enqueue, {sizes.enqueue:,} tasks from one thread (+ flush)",
        "tasks/s",
        _values(got, "rate"),
        pairs=_pairs(contenders),
    )


def _e2e(rounds: int, sizes: Sizes, contenders: tuple[str, ...]) -> list[Benchmark]:
    out = []
    for workers in (1, 3):
        got = interleave(_cases("e2e", contenders, n=sizes.e2e, workers=workers), rounds)
        noun = "process" if workers == 1 else "processes"
        out.append(
            make_benchmark(
                f"durable_e2e_{workers}",
                f"durable end to end, {sizes.e2e:,} queued no-op tasks, {workers} worker {noun}",
                "tasks/s",
                _values(got, "rate"),
                pairs=_pairs(contenders),
                note="n / (last start - gate opened); runs beyond n: "
                + str({k: sum(s["runs"] for s in v) - sizes.e2e * len(v) for k, v in got.items()}),
            )
        )
    return out


def _latency(rounds: int, sizes: Sizes, contenders: tuple[str, ...]) -> list[Benchmark]:
    got = interleave(
        _cases("latency", contenders, n=sizes.latency, rate=sizes.latency_rate), rounds
    )
    out = []
    for q in ("p50", "p99"):
        out.append(
            make_benchmark(
                f"durable_latency_{q}",
                f"durable enqueue-to-start latency {q}, {sizes.latency} tasks at"
                f" {sizes.latency_rate:g}/s, 1 worker process",
                "ms",
                _values(got, q),
                pairs=_pairs(contenders, peer_over_offload=True),
                higher_is_better=False,
            )
        )
    return out


def _rss(sizes: Sizes) -> Benchmark:
    """One sample, durability normal (the store's durability changes its commits, not
    what a process holds)."""
    r = _sample("rss", "offload", "normal", n=sizes.rss, chunk=sizes.rss_chunk)
    chunks = r["producer_chunks"]
    rows = {
        "producer, before the first spawn": r["producer_start"],
        f"producer, {sizes.rss_chunk:,} queued": chunks[0],
        f"producer, {sizes.rss:,} queued": chunks[-1],
        "producer, largest after a flush": max(chunks),
        "store files on disk": r["db_bytes"],
    }
    for at, (rss, _) in zip(WORKER_RSS_AT, r["worker"], strict=True):
        rows[f"worker, {at:g} s into the backlog"] = rss
    ran = ", ".join(
        f"{done:,} after {at:g} s" for at, (_, done) in zip(WORKER_RSS_AT, r["worker"], strict=True)
    )
    return make_benchmark(
        "durable_rss",
        f"durable: memory with {sizes.rss:,} queued tasks (offload, normal)",
        "MB",
        {row: [value / 2**20] for row, value in rows.items()},
        pairs=[],
        higher_is_better=False,
        note=f"flush_sync() every {sizes.rss_chunk:,}; the worker ran {ran}",
    )


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "sample":
        print(json.dumps(sample_main(json.loads(sys.argv[2]))))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker_main(sys.argv[2], sys.argv[3])
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10x smaller sizes")
    parser.add_argument("--rounds", type=int, help=f"rounds (default {ROUNDS}; quick 1)")
    parser.add_argument("--only", help=f"phases out of {','.join(PHASES)}; default all")
    parser.add_argument("--contenders", help=f"out of {','.join(CONTENDERS)}; default all")
    args = parser.parse_args()
    phases = tuple(args.only.split(",")) if args.only else PHASES
    contenders = tuple(args.contenders.split(",")) if args.contenders else CONTENDERS
    started = time.monotonic()
    run(args.rounds or (1 if args.quick else ROUNDS), args.quick, phases, contenders)
    print(
        f"\n{time.monotonic() - started:.0f} s (printed only: bench/run.py --only durable writes)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
