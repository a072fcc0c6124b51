"""The scenario valgrind memcheck runs (tools/valgrind.sh): every lane, failures,
cancellation, limits, shutdown; then each scenario of the refleak hunt (tools/leaks.py)
once: refusals (Full, Closed, bad targets), waiting and timeouts, callbacks and handlers
that raise, a runtime dropped without shutdown, uvloop, the processes lane."""

import asyncio
import logging
import sys
import threading
from pathlib import Path

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


if __name__ == "__main__":  # the processes lane's workers import this module
    asyncio.run(main())
    with offload.Runtime() as sync_rt:
        print(sync_rt.spawn(work, 7).result(timeout=30))

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import leaks

    for name, scenario in leaks.SCENARIOS.items():
        print(f"{name}: {scenario()} spawns", flush=True)
