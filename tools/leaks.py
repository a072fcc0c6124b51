"""Refleak hunt, the way CPython's `-R` does it: run each scenario a few times to
warm caches, then repeatedly, and require that live objects and allocated memory
blocks return to their baseline. Exit status 1 on a leak.

Usage: python tools/leaks.py [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import logging
import sys
import threading
import time
from collections.abc import Callable

import offload

logging.getLogger("offload").setLevel(logging.CRITICAL)


def sync_work(i: int) -> int:
    if i % 7 == 0:
        raise ValueError(i)
    return i


async def async_work(i: int) -> int:
    await asyncio.sleep(0)
    if i % 7 == 0:
        raise ValueError(i)
    return i


def quiet(task: object, exc: BaseException) -> None:
    pass


def scenario_lanes() -> None:
    async def main() -> None:
        async with offload.Runtime(threads=4, error_handler=quiet) as rt:
            for i in range(200):
                rt.spawn(sync_work, i)
                rt.spawn(async_work, i)
                rt.background.spawn(async_work, i)
            results = await asyncio.gather(
                *[rt.threads.run(sync_work, i) for i in range(1, 100) if i % 7]
            )
            assert len(results) == 85
            try:
                await rt.run(sync_work, 0)
            except ValueError:
                pass
            await rt.drain(10)

    asyncio.run(main())


def scenario_cancel_and_limits() -> None:
    async def main() -> None:
        async with offload.Runtime(
            threads=1,
            lanes={"threads": {"max_pending": 10, "on_full": "drop"}},
            error_handler=quiet,
        ) as rt:
            gate = threading.Event()
            rt.threads.spawn(gate.wait)
            tasks = [rt.threads.spawn(sync_work, i) for i in range(50)]
            for t in tasks[::2]:
                t.cancel()
            coros = [rt.loop.spawn(asyncio.sleep, 5) for _ in range(50)]
            await asyncio.sleep(0)
            for t in coros:
                t.cancel()
            gate.set()
            await rt.drain(10)

    asyncio.run(main())


def scenario_sync_runtime() -> None:
    with offload.Runtime(threads=2, error_handler=quiet) as rt:
        tasks = [rt.spawn(sync_work, i) for i in range(300)]
        for t in tasks:
            t.exception(timeout=10)
        cbs: list[int] = []
        rt.spawn(sync_work, 1).add_done_callback(lambda t: cbs.append(t.result()))
        rt.drain_sync(10)


def measure(fn: Callable[[], None], rounds: int) -> tuple[list[int], list[int]]:
    blocks, objects = [], []
    for _ in range(rounds):
        fn()
        time.sleep(0.05)  # let pool threads finish their last DECREFs
        gc.collect()
        blocks.append(sys.getallocatedblocks())
        objects.append(len(gc.get_objects()))
    return blocks, objects


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    failed = False
    for fn in (scenario_lanes, scenario_cancel_and_limits, scenario_sync_runtime):
        measure(fn, 10)  # warm-up: caches, free lists, interned strings, thread states
        blocks, objects = measure(fn, args.rounds)
        # Each round runs hundreds of tasks, so a per-task leak (the failure mode
        # that matters) adds hundreds of blocks and objects per round. Allow the
        # slow drift of thread-ident reuse in threading._active and allocator
        # caches: under 25 blocks per round on average, and objects not growing
        # in every single round (CPython's -R criterion).
        object_deltas = [b - a for a, b in itertools.pairwise(objects)]
        block_growth, object_growth = blocks[-1] - blocks[0], objects[-1] - objects[0]
        leak = block_growth / (len(blocks) - 1) > 25 or all(d > 0 for d in object_deltas)
        failed |= leak
        print(
            f"{fn.__name__:<28} blocks {blocks[0]}..{blocks[-1]} (growth {block_growth:+d})"
            f"  objects {objects[0]}..{objects[-1]} (growth {object_growth:+d})"
            f"  {'LEAK' if leak else 'ok'}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
