"""Soak: 1,000,000 tasks across the loop, background and threads lanes from 8
producer threads, in waves. Checks that every task is accounted for
(submitted = succeeded + failed + cancelled + dropped + rejected) and that RSS
returns to within 5% of its plateau after the load.

Usage: python tools/soak.py [--tasks N]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import sys
import threading
import time

import offload


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def sync_work(i: int) -> int:
    if i % 101 == 0:
        raise ValueError(i)
    return i


async def async_work(i: int) -> int:
    if i % 103 == 0:
        raise ValueError(i)
    return i


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=1_000_000)
    args = parser.parse_args()
    failures = 0
    lock = threading.Lock()

    def on_error(task: object, exc: BaseException) -> None:
        nonlocal failures
        with lock:
            failures += 1

    producers, waves = 8, 10
    per_wave = args.tasks // (producers * waves)
    samples: list[float] = []

    async def home() -> None:
        async with offload.Runtime(
            background_loops=2,
            error_handler=on_error,
            lanes={
                "threads": {"max_pending": 50_000, "on_full": "block"},
                "background": {"max_pending": 50_000, "on_full": "block"},
                "loop": {"max_pending": 50_000, "on_full": "block"},
            },
        ) as rt:
            # Long-lived producer threads, as in a server: one barrier per wave.
            start_wave = threading.Barrier(producers + 1)
            end_wave = threading.Barrier(producers + 1)

            def producer(seed: int) -> None:
                for wave in range(waves):
                    start_wave.wait()
                    for i in range(per_wave):
                        n = (wave * producers + seed) * per_wave + i
                        lane = n % 3
                        if lane == 0:
                            rt.threads.spawn(sync_work, n)
                        elif lane == 1:
                            rt.background.spawn(async_work, n)
                        else:
                            rt.loop.spawn(async_work, n)  # from a thread: the home loop
                    end_wave.wait()

            threads = [threading.Thread(target=producer, args=(p,)) for p in range(producers)]
            for t in threads:
                t.start()
            for wave in range(waves):
                await asyncio.to_thread(start_wave.wait)
                await asyncio.to_thread(end_wave.wait)
                assert not await rt.drain(120), "tasks left after drain"
                gc.collect()
                samples.append(rss_mb())
                print(f"wave {wave + 1}/{waves}: rss {samples[-1]:.1f} MB", flush=True)
            for t in threads:
                t.join()
            stats = rt.stats()
        total = sum(s["submitted"] for s in stats.values())
        accounted = sum(
            s[k]
            for s in stats.values()
            for k in ("succeeded", "failed", "cancelled", "dropped", "rejected")
        )
        failed = sum(s["failed"] for s in stats.values())
        print(f"submitted {total}, accounted {accounted}, failed {failed}, reported {failures}")
        plateau = max(samples[: waves // 2])
        final = samples[-1]
        print(
            f"rss plateau {plateau:.1f} MB, final {final:.1f} MB ({(final / plateau - 1) * 100:+.1f}%)"
        )
        ok = (
            total == producers * waves * per_wave
            and accounted == total
            and failed == failures
            and final <= plateau * 1.05
        )
        print("SOAK", "OK" if ok else "FAILED")
        if not ok:
            raise SystemExit(1)

    start = time.monotonic()
    asyncio.run(home())
    print(f"{time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
