"""A short tour of offload: every lane, failures, limits, drain and shutdown.

Run with `make showcase` (or `python examples/showcase.py`). It prints what ran
where and the engine's own statistics, then exits.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time

import offload

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
seen: list[str] = []


def audit_log(event: str) -> str:
    """A blocking call: runs on the C thread pool."""
    time.sleep(0.01)
    seen.append(f"threads     {event:<18} request={request_id.get()}")
    return event


async def send_analytics(event: str) -> None:
    """An async call: runs on the caller's loop."""
    await asyncio.sleep(0.01)
    seen.append(f"loop        {event:<18} request={request_id.get()}")


async def refresh_cache(key: str) -> int:
    """Async work that must not slow the request loop: a background loop."""
    await asyncio.sleep(0.02)
    seen.append(f"background  {key:<18} loop-thread={threading.current_thread().name}")
    return len(key)


def flaky() -> None:
    raise RuntimeError("the analytics endpoint is down")


@offload.task(name="nightly-report")
def report(day: str) -> str:
    return f"report for {day}"


def count_primes(limit: int) -> int:
    """CPU-bound: the processes lane runs it in a worker process (no GIL contention)."""
    return sum(all(n % d for d in range(2, int(n**0.5) + 1)) for n in range(2, limit))


class PriceClient:
    """Stands for an async API client: it belongs to the loop it was created on."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()

    async def price(self, sku: str) -> tuple[str, str]:
        assert asyncio.get_running_loop() is self.loop
        await asyncio.sleep(0)
        return sku, threading.current_thread().name


prices = offload.loop_local(PriceClient)


def sync_pricing(runtime: offload.Runtime, sku: str) -> tuple[str, str]:
    """Sync code on the thread pool calling async code on the home loop."""
    return runtime.call(prices.price, sku)


def from_a_plain_thread(runtime: offload.Runtime) -> None:
    """Library code in a thread with no event loop can spawn too."""
    task = runtime.spawn(audit_log, "from-plain-thread")
    seen.append(f"(plain thread got result {task.result(timeout=5)!r})")


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="  log: %(levelname)s %(message)s")
    async with offload.Runtime(threads=8, background_loops=2) as rt:
        request_id.set("req-42")
        rt.spawn(send_analytics, "page_view")  # coroutine function -> loop lane
        rt.spawn(audit_log, "user_login")  # sync callable -> thread pool
        rt.background.spawn(refresh_cache, "top-products")
        print("result of run():", await rt.run(audit_log, "awaited"))
        print("result of background.run():", await rt.background.run(refresh_cache, "prices"))

        failing = rt.spawn(flaky)  # reported once on the `offload` logger
        named = rt.threads.options(name="report-2026-11-25").spawn(report, "2026-11-25")
        print("decorated function still callable:", report("today"))

        thread = threading.Thread(target=from_a_plain_thread, args=(rt,))
        thread.start()
        await asyncio.to_thread(thread.join)

        results = await asyncio.gather(*[rt.threads.run(pow, 2, i) for i in range(10)])
        print("10 runs on the thread pool:", results)

        primes = await asyncio.gather(
            *[rt.processes.run(count_primes, n) for n in (20_000, 30_000)]
        )
        print("processes lane (CPU-bound, worker processes):", primes)
        print("offload.call from a pool thread:", await rt.threads.run(sync_pricing, rt, "sku-1"))
        print(
            "loop_local client, home and background loops:",
            await asyncio.gather(prices.price("sku-2"), rt.background.run(prices.price, "sku-3")),
        )

        unfinished = await rt.drain(timeout=5)
        print(f"drained; unfinished={len(unfinished)} failing.state={failing.state}")
        print(f"named task: {named.name!r} -> {named.result()!r}")

        limited = offload.Runtime(lanes={"threads": {"max_running": 1, "max_pending": 2}})
        async with limited:
            blocker = threading.Event()
            limited.threads.spawn(blocker.wait)
            limited.threads.spawn(time.sleep, 0)
            limited.threads.spawn(time.sleep, 0)
            try:
                limited.threads.spawn(time.sleep, 0)
            except offload.Full as exc:
                print("backpressure:", exc)
            blocker.set()

        print("\nwhat ran where:")
        for line in sorted(seen):
            print("  ", line)
        print("\nper-lane statistics:")
        stats = rt.stats()
        print(
            f"  {'lane':<11}{'submitted':>10}{'ok':>6}{'failed':>8}{'p50 wait':>12}{'p99 run':>12}"
        )
        for lane, s in stats.items():
            if s["submitted"]:
                print(
                    f"  {lane:<11}{s['submitted']:>10}{s['succeeded']:>6}{s['failed']:>8}"
                    f"{s['queue_wait']['p50'] * 1e6:>10.0f}us{s['run_time']['p99'] * 1e3:>10.1f}ms"
                )
    print("\nshut down cleanly.")


if __name__ == "__main__":
    asyncio.run(main())
