"""Thread safety: many threads spawning at once lose nothing, run nothing twice, and the
stats add up exactly."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

import offload

from .conftest import Arun, MakeRuntime
from .support import WAIT, accounted, counters, lane_names_of


def start_together(n: int, body: Any) -> None:
    """Run body(i) in n threads released at the same instant; join them (bounded)."""
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(WAIT)
            body(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a spawning thread hung"
    assert errors == []


def test_32_threads_spawning_1000_tasks_each_run_every_task_exactly_once(
    runtime: MakeRuntime,
) -> None:
    """32 threads x 1,000 spawns at once: 32,000 runs, each exactly once, counted exactly."""
    rt = runtime()
    ran: list[tuple[int, int]] = []

    def producer(i: int) -> None:
        for j in range(1000):
            rt.threads.spawn(ran.append, (i, j))

    start_together(32, producer)
    assert rt.close(30) == set()
    assert len(ran) == 32_000
    assert Counter(ran) == Counter({(i, j): 1 for i in range(32) for j in range(1000)})
    stats = counters(rt.threads.stats())
    assert stats == {
        "submitted": 32_000,
        "pending": 0,
        "running": 0,
        "succeeded": 32_000,
        "failed": 0,
        "cancelled": 0,
        "dropped": 0,
        "rejected": 0,
    }


def test_threads_spawning_on_every_lane_with_a_home_loop(arun: Arun, runtime: MakeRuntime) -> None:
    """16 threads x 300 spawns spread over loop (the home loop), background and threads,
    some failing: every task ends once and every lane's counters add up."""
    failures: list[offload.Task[Any]] = []
    ran: list[tuple[str, int, int]] = []

    async def coro(label: str, i: int, j: int) -> None:
        ran.append((label, i, j))
        if j % 7 == 0:
            raise ValueError(j)

    def sync(i: int, j: int) -> None:
        ran.append(("threads", i, j))
        if j % 7 == 0:
            raise ValueError(j)

    lanes = ("loop", "background", "threads")

    async def main() -> None:
        rt = runtime(background_loops=2, error_handler=lambda task, exc: failures.append(task))
        async with rt:

            def producer(i: int) -> None:
                for j in range(300):
                    lane = lanes[j % 3]
                    if lane == "threads":
                        rt.threads.spawn(sync, i, j)
                    else:
                        lane_names_of(rt)[lane].spawn(coro, lane, i, j)

            await asyncio.to_thread(start_together, 16, producer)
            assert not await rt.drain(30)
            stats = rt.stats()
        assert len(ran) == len(set(ran)) == 16 * 300
        for index, lane in enumerate(lanes):
            lane_stats = counters(stats[lane])
            assert lane_stats["submitted"] == 16 * 100 == accounted(lane_stats)
            assert lane_stats["pending"] == lane_stats["running"] == 0
            failing_js = [j for j in range(300) if j % 3 == index and j % 7 == 0]
            assert lane_stats["failed"] == 16 * len(failing_js), lane
            assert lane_stats["succeeded"] == 16 * (100 - len(failing_js)), lane
        assert len(failures) == len({t.id for t in failures})
        assert len(failures) == sum(counters(stats[lane])["failed"] for lane in lanes)

    arun(main(), timeout=60)


def test_tasks_spawning_tasks_from_engine_threads(loop_kind: str, runtime: MakeRuntime) -> None:
    """Pool workers and background loops spawn children while they run: a binary tree of
    depth 7 on each lane runs all of its 255 nodes once."""
    rt = runtime(background_loops=2)
    seen: list[tuple[str, str]] = []
    done = threading.Event()
    lock = threading.Lock()
    total = 2 * 255

    def note(entry: tuple[str, str]) -> None:
        with lock:
            seen.append(entry)
            if len(seen) == total:
                done.set()

    def sync_node(path: str) -> None:
        note(("threads", path))
        if len(path) < 7:
            rt.threads.spawn(sync_node, path + "0")
            rt.threads.spawn(sync_node, path + "1")

    async def coro_node(path: str) -> None:
        note(("background", path))
        if len(path) < 7:
            rt.background.spawn(coro_node, path + "0")
            rt.background.spawn(coro_node, path + "1")

    rt.threads.spawn(sync_node, "")
    rt.background.spawn(coro_node, "")
    assert done.wait(30)
    assert rt.close(WAIT) == set()
    assert len(seen) == len(set(seen)) == total
    stats = rt.stats()
    assert stats["threads"]["succeeded"] == stats["background"]["succeeded"] == 255
