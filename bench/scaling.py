"""Scaling: throughput with N producer threads; queue wait under a CPU-bound neighbour.

Throughput: N plain threads released together by a barrier each submit n/N calls of
f(); timed from the release to all done. Latency: one plain thread submits a trivial
task every 0.5 ms; the task records (start - submit); p50 and p99 over the run, while
nothing else runs, while a pure-Python busy thread competes for the GIL, and while a
busy process competes for the 2 cores.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from time import perf_counter

from common import (
    Benchmark,
    Sample,
    f,
    interleave,
    make_benchmark,
    percentile,
    rate,
    run_benchmark,
)

import offload

PRODUCERS = (1, 2, 4, 8, 32)
Submit = Callable[..., object]


def _producers(n: int, threads: int, submit: Submit) -> float:
    """Run `submit(f)` n times from `threads` threads; return the seconds it took."""
    barrier = threading.Barrier(threads + 1)

    def produce() -> None:
        barrier.wait()
        for _ in range(n // threads):
            submit(f)

    workers = [threading.Thread(target=produce) for _ in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    start = perf_counter()
    for worker in workers:
        worker.join()
    return start


def throughput(n: int, threads: int) -> list[tuple[str, Sample]]:
    n = n // threads * threads

    def offload_spawn() -> float:
        with offload.Runtime() as rt:
            _producers(n // 10, threads, rt.threads.spawn)
            rt.drain_sync()
            start = _producers(n, threads, rt.threads.spawn)
            rt.drain_sync()
            return rate(n, start)

    def executor_submit() -> float:
        with ThreadPoolExecutor(32) as executor:
            futures: list[object] = []

            def submit(fn: Callable[[], None]) -> None:
                futures.append(executor.submit(fn))  # list.append is atomic

            _producers(n // 10, threads, submit)
            wait(futures)  # type: ignore[arg-type]
            futures.clear()
            start = _producers(n, threads, submit)
            wait(futures)  # type: ignore[arg-type]
            return rate(n, start)

    return [
        ("offload threads.spawn", offload_spawn),
        ("ThreadPoolExecutor.submit", executor_submit),
    ]


# --- latency ------------------------------------------------------------------------------
def _record(submitted: float, waits: list[float]) -> None:
    waits.append(perf_counter() - submitted)


def _paced(count: int, submit: Submit) -> list[float]:
    waits: list[float] = []
    for _ in range(count):
        submit(_record, perf_counter(), waits)
        time.sleep(0.0005)
    deadline = time.monotonic() + 30
    while len(waits) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return waits


def latency(count: int) -> list[tuple[str, Callable[[], tuple[float, float]]]]:
    """Samples of (p50, p99) in microseconds."""

    def percentiles(waits: list[float]) -> tuple[float, float]:
        return percentile(waits, 50) * 1e6, percentile(waits, 99) * 1e6

    def offload_spawn() -> tuple[float, float]:
        with offload.Runtime() as rt:
            _paced(count // 10, rt.threads.spawn)
            return percentiles(_paced(count, rt.threads.spawn))

    def executor_submit() -> tuple[float, float]:
        with ThreadPoolExecutor(32) as executor:
            _paced(count // 10, executor.submit)
            return percentiles(_paced(count, executor.submit))

    return [
        ("offload threads.spawn", offload_spawn),
        ("ThreadPoolExecutor.submit", executor_submit),
    ]


@contextlib.contextmanager
def neighbour(kind: str) -> Iterator[None]:
    if kind == "none":
        yield
    elif kind == "thread":
        stop = threading.Event()

        def spin() -> None:
            while not stop.is_set():
                sum(range(1000))

        thread = threading.Thread(target=spin, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
    else:
        proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            yield
        finally:
            proc.kill()
            proc.wait()


def run(rounds: int, scale: float) -> list[Benchmark]:
    out = []
    n = int(32_000 * scale)
    for threads in PRODUCERS:
        out.append(
            run_benchmark(
                f"scaling_producers_{threads}",
                f"scaling: spawn from {threads} producer thread{'s' * (threads > 1)} + wait",
                "tasks/s",
                throughput(n, threads),
                rounds,
            )
        )
    for kind in ("none", "thread", "process"):
        # A GIL-bound neighbour delays every paced submit by up to the switch interval
        # (5 ms), so that case gets fewer samples to stay within the time budget.
        count = int((500 if kind == "thread" else 2000) * scale)
        with neighbour(kind):
            samples = interleave(latency(count), rounds)
        for i, q in enumerate((50, 99)):
            bench = make_benchmark(
                f"latency_{kind}_p{q}",
                f"queue wait p{q}, CPU-bound neighbour: {kind}",
                "µs",
                {name: [pair[i] for pair in values] for name, values in samples.items()},
                higher_is_better=False,
            )
            out.append(bench)
    return out
