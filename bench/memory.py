"""Memory per pending task: 100k tasks accepted but not started, in a fresh process each.

Each measurement runs in its own interpreter (`python bench/memory.py CONTENDER MODE N`)
so that one contender's freed memory can't be reused by the next: MODE `tracemalloc`
counts Python allocations (not the engine's plain `malloc`s), MODE `rss` the process's
resident set (everything, page granular). Work that can't start:

* threads lanes: the only worker (offload `max_running=1`, ThreadPoolExecutor(1)) is
  blocked on an Event; every later task waits in the queue.
* loop lanes: spawned from a coroutine that hasn't yielded yet, so nothing has run.

The target (`f`) and the coroutine objects are made before the measurement starts, so
only what the scheduler keeps per task is counted; the benchmark keeps no reference
to the returned tasks/futures.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from common import Benchmark, Sample, f, noop, run_benchmark

import offload

PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


class Meter:
    def __init__(self, mode: str) -> None:
        self.mode = mode

    def start(self) -> None:
        gc.collect()
        if self.mode == "tracemalloc":
            tracemalloc.start()
            self.before = tracemalloc.get_traced_memory()[0]
        else:
            self.before = _rss()

    def stop(self) -> int:
        if self.mode == "tracemalloc":
            used = tracemalloc.get_traced_memory()[0] - self.before
            tracemalloc.stop()
            return used
        return _rss() - self.before


def offload_threads(n: int, meter: Meter) -> int:
    rt = offload.Runtime(lanes={"threads": {"max_running": 1}})
    gate = threading.Event()
    rt.threads.spawn(gate.wait)
    time.sleep(0.05)
    spawn = rt.threads.spawn
    meter.start()
    for _ in range(n):
        spawn(f)
    used = meter.stop()
    gate.set()
    rt.close(60)
    return used


def executor_threads(n: int, meter: Meter) -> int:
    executor = ThreadPoolExecutor(1)
    gate = threading.Event()
    executor.submit(gate.wait)
    time.sleep(0.05)
    submit = executor.submit
    meter.start()
    for _ in range(n):
        submit(f)
    used = meter.stop()
    gate.set()
    executor.shutdown()
    return used


def _in_loop(n: int, meter: Meter, spawn_all: Callable[[list[Any]], object]) -> int:
    async def main() -> int:
        coros: list[Coroutine[Any, Any, None]] = [noop() for _ in range(n)]
        meter.start()
        spawn_all(coros)  # no await in between: nothing has started
        used = meter.stop()
        del coros
        return used

    return asyncio.run(main())


def offload_loop(n: int, meter: Meter) -> int:
    rt = offload.Runtime()

    def spawn_all(coros: list[Any]) -> None:
        spawn = rt.loop.spawn
        for i in range(n):
            spawn(coros[i])
            coros[i] = None  # the lane owns the coroutine now

    used = _in_loop(n, meter, spawn_all)
    rt.close(60)
    return used


_refs: set[asyncio.Task[None]] = set()


def create_task(n: int, meter: Meter) -> int:
    def spawn_all(coros: list[Any]) -> None:
        for i in range(n):
            task = asyncio.create_task(coros[i])
            coros[i] = None
            _refs.add(task)
            task.add_done_callback(_refs.discard)

    return _in_loop(n, meter, spawn_all)


CONTENDERS: dict[str, Callable[[int, Meter], int]] = {
    "offload threads.spawn": offload_threads,
    "ThreadPoolExecutor.submit": executor_threads,
    "offload loop.spawn": offload_loop,
    "create_task + refs + callback": create_task,
}


def _measure(name: str, mode: str, n: int) -> Sample:
    def sample() -> float:
        out = subprocess.run(
            [sys.executable, __file__, name, mode, str(n)],
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        )
        return float(json.loads(out.stdout.strip().splitlines()[-1])) / n

    return sample


def run(rounds: int, n: int) -> list[Benchmark]:
    out = []
    for mode in ("tracemalloc", "rss"):
        out.append(
            run_benchmark(
                f"memory_{mode}",
                f"memory per pending task, {n:,} pending ({mode})",
                "bytes/task",
                [(name, _measure(name, mode, n)) for name in CONTENDERS],
                rounds,
                pairs=[
                    ("offload threads.spawn", "ThreadPoolExecutor.submit"),
                    ("offload loop.spawn", "create_task + refs + callback"),
                ],
                higher_is_better=False,
                note="engine mallocs are invisible to tracemalloc" if mode == "tracemalloc" else "",
            )
        )
    return out


if __name__ == "__main__":
    contender, mode, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(json.dumps(CONTENDERS[contender](count, Meter(mode))))
