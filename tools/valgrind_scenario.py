"""A short scenario for valgrind memcheck (tools/valgrind.sh): every lane, failures,
cancellation, limits, shutdown."""

import asyncio
import logging
import threading

import offload

logging.getLogger("offload").setLevel(logging.CRITICAL)


def work(i: int) -> int:
    if i % 5 == 0:
        raise ValueError(i)
    return i


async def awork(i: int) -> int:
    await asyncio.sleep(0)
    return work(i)


async def main() -> None:
    async with offload.Runtime(
        threads=2, lanes={"threads": {"max_pending": 20, "on_full": "drop"}}
    ) as rt:
        gate = threading.Event()
        rt.threads.spawn(gate.wait)
        for i in range(40):
            rt.threads.spawn(work, i)
            rt.spawn(awork, i)
            rt.background.spawn(awork, i)
        rt.loop.spawn(asyncio.sleep, 5).cancel()
        gate.set()
        await rt.drain(30)
        print(await asyncio.gather(*[rt.threads.run(work, i) for i in (1, 2, 3)]))


asyncio.run(main())
with offload.Runtime() as sync_rt:
    print(sync_rt.spawn(work, 7).result(timeout=30))
