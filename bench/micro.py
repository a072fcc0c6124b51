"""Engine micro-benchmarks (issue 2): each lane against its stdlib equivalent, measured
in the same run, interleaved (A B A B ...), median of several rounds.

Usage: python bench/micro.py [--rounds N] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

import offload


def f() -> None:
    pass


async def noop() -> None:
    pass


# --- thread lane: await run() throughput (200 concurrent awaiters) -------------------
def thread_run(n: int, use_offload: bool) -> float:
    async def main() -> float:
        rt = offload.Runtime()
        run = rt.threads.run

        async def worker(k: int) -> None:
            if use_offload:
                for _ in range(k):
                    await run(f)
            else:
                for _ in range(k):
                    await asyncio.to_thread(f)

        start = time.perf_counter()
        await asyncio.gather(*[worker(n // 200) for _ in range(200)])
        elapsed = time.perf_counter() - start
        await rt.shutdown(5)
        return n / elapsed

    return asyncio.run(main())


# --- thread lane: fire and forget, then wait for all ---------------------------------
def thread_spawn(n: int, use_offload: bool) -> float:
    if use_offload:
        with offload.Runtime() as rt:
            spawn = rt.threads.spawn
            start = time.perf_counter()
            for _ in range(n):
                spawn(f)
            rt.drain_sync()
            return n / (time.perf_counter() - start)
    with ThreadPoolExecutor(32) as ex:
        start = time.perf_counter()
        futures = [ex.submit(f) for _ in range(n)]
        wait(futures)
        return n / (time.perf_counter() - start)


# --- background lane: submit from a non-loop thread ----------------------------------
def background_spawn(n: int, use_offload: bool) -> float:
    if use_offload:
        with offload.Runtime() as rt:
            rt.background.spawn(noop()).result(timeout=10)  # start the loop thread
            spawn = rt.background.spawn
            start = time.perf_counter()
            tasks = [spawn(noop()) for _ in range(n)]
            for t in tasks:
                t.result(timeout=60)
            return n / (time.perf_counter() - start)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        start = time.perf_counter()
        futures = [asyncio.run_coroutine_threadsafe(noop(), loop) for _ in range(n)]
        for fut in futures:
            fut.result(timeout=60)
        return n / (time.perf_counter() - start)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


# --- loop lane: spawn on the caller's loop, wait for all -----------------------------
def loop_spawn(n: int, use_offload: bool) -> float:
    async def main() -> float:
        rt = offload.Runtime()
        coros = [noop() for _ in range(n)]
        start = time.perf_counter()
        if use_offload:
            spawn = rt.loop.spawn
            tasks = [spawn(c) for c in coros]
            for t in tasks:
                if not t.done():
                    await t
        else:
            refs: set[asyncio.Task[None]] = set()
            for c in coros:
                task = asyncio.create_task(c)
                refs.add(task)
                task.add_done_callback(refs.discard)
            while refs:
                await asyncio.sleep(0)
        elapsed = time.perf_counter() - start
        await rt.shutdown(5)
        return n / elapsed

    return asyncio.run(main())


def memory_per_pending(n: int) -> float:
    rt = offload.Runtime(threads=1)
    gate = threading.Event()
    rt.threads.spawn(gate.wait)
    time.sleep(0.05)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tasks = [rt.threads.spawn(f) for _ in range(n)]
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    gate.set()
    rt.close(30)
    # Subtract the list slot the benchmark itself keeps per task; add the engine's
    # queue slot (plain malloc, invisible to tracemalloc).
    del tasks
    return (after - before) / n - 8 + 8


SCENARIOS: list[tuple[str, str, Callable[[int, bool], float], int, float]] = [
    ("threads.run (200 awaiters)", "asyncio.to_thread", thread_run, 40_000, 10.0),
    ("threads.spawn + wait", "ThreadPoolExecutor.submit", thread_spawn, 100_000, 5.0),
    ("background.spawn from a thread", "run_coroutine_threadsafe", background_spawn, 40_000, 10.0),
    ("loop.spawn", "create_task + refs + callback", loop_spawn, 50_000, 1.2),
]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    scale = 0.25 if args.quick else 1.0
    import platform

    print(
        f"python {platform.python_version()}, {platform.machine()}, cpus={__import__('os').cpu_count()}"
    )
    print(f"{'offload':<32}{'baseline':<30}{'offload/s':>12}{'baseline/s':>12}{'ratio':>8}  target")
    ok = True
    for name, base, fn, n, target in SCENARIOS:
        n = int(n * scale)
        ours, theirs = [], []
        for _ in range(rounds):
            ours.append(fn(n, True))
            theirs.append(fn(n, False))
        a, b = statistics.median(ours), statistics.median(theirs)
        ratio = a / b
        ok &= ratio >= target
        verdict = "PASS" if ratio >= target else "MISS"
        print(f"{name:<32}{base:<30}{a:>12,.0f}{b:>12,.0f}{ratio:>7.1f}x  >={target}x {verdict}")
    mem = memory_per_pending(100_000)
    print(
        f"engine memory per pending task: {mem:.0f} B (target <= 256 B) "
        f"{'PASS' if mem <= 256 else 'MISS'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
