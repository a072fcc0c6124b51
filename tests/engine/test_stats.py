"""rt.stats(): per-lane counters that are exact after a known workload and add up at
every moment (submitted = succeeded + failed + cancelled + dropped + rejected + pending
+ running: refused spawns are counted as submitted, csrc/lane.c lane_admit), and
queue-wait / run-time percentiles."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import offload

from .conftest import Arun, MakeRuntime
from .support import (
    WAIT,
    Gate,
    accounted,
    async_wait_until,
    counters,
    lane_names_of,
    wait_until,
)

CONTRACT_KEYS = {
    "submitted",
    "pending",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "rejected",
    "dropped",
    "queue_wait",
    "run_time",
}


def test_a_fresh_runtime_counts_nothing(runtime: MakeRuntime) -> None:
    """Every lane starts at zero, with empty percentiles."""
    stats = runtime().stats()
    assert {"loop", "background", "threads"} <= set(stats)
    for name in ("loop", "background", "threads"):
        assert CONTRACT_KEYS <= set(stats[name])
        assert set(counters(stats[name]).values()) == {0}
        for series in ("queue_wait", "run_time"):
            assert stats[name][series] == {"p50": 0.0, "p90": 0.0, "p99": 0.0, "count": 0}


def ok_sync(hold: Gate | None = None) -> None:
    if hold is not None:
        hold.wait()


async def ok_async(hold: Gate | None = None) -> None:
    if hold is not None:
        await hold.async_wait()


def fail_sync() -> None:
    raise ZeroDivisionError


async def fail_async() -> None:
    raise ZeroDivisionError


def ok_target(lane: str) -> Any:
    return ok_sync if lane == "threads" else ok_async


def failing_target(lane: str) -> Any:
    return fail_sync if lane == "threads" else fail_async


@pytest.mark.parametrize("lane", ["threads", "loop", "background"])
def test_exact_counts_during_and_after_a_known_workload(
    arun: Arun, runtime: MakeRuntime, lane: str
) -> None:
    """1 running + 5 waiting, 1 refused, 2 cancelled while waiting, 2 failing, then 3
    more: every counter is exact in flight and at the end."""

    async def main() -> None:
        limits = {"max_running": 1, "max_pending": 5}
        async with runtime(lanes={lane: limits}, error_handler=lambda t, e: None) as rt:
            spawn = lane_names_of(rt)[lane].spawn
            hold = Gate()
            blocker = spawn(ok_target(lane), hold)
            waiting = [spawn(ok_target(lane)) for _ in range(3)]
            waiting += [spawn(failing_target(lane)) for _ in range(2)]
            with pytest.raises(offload.Full):
                spawn(ok_target(lane))
            assert waiting[0].cancel() and waiting[1].cancel()
            assert await async_wait_until(lambda: blocker.state == "running")
            during = counters(rt.stats()[lane])
            assert during == {
                "submitted": 7,
                "pending": 3,
                "running": 1,
                "succeeded": 0,
                "failed": 0,
                "cancelled": 2,
                "dropped": 0,
                "rejected": 1,
            }
            hold.open()
            assert not await rt.drain(WAIT)
            for _ in range(3):
                await spawn(ok_target(lane))
            after = counters(rt.stats()[lane])
            assert after == {
                "submitted": 10,
                "pending": 0,
                "running": 0,
                "succeeded": 5,
                "failed": 2,
                "cancelled": 2,
                "dropped": 0,
                "rejected": 1,
            }
            others = [n for n in ("loop", "background", "threads") if n != lane]
            assert all(rt.stats()[n]["submitted"] == 0 for n in others)

    arun(main())


@pytest.mark.parametrize("on_full", ["reject", "drop"])
def test_the_identity_holds_at_every_snapshot_under_load(
    loop_kind: str, runtime: MakeRuntime, on_full: str
) -> None:
    """8 threads spawn, fail and cancel on two lanes while another thread takes snapshots:
    submitted always equals the sum of the other counters."""
    limits = {"max_running": 2, "max_pending": 8, "on_full": on_full}
    rt = runtime(lanes={"threads": limits, "background": limits}, error_handler=lambda t, e: None)
    stop = threading.Event()
    bad: list[dict[str, int]] = []
    snapshots = [0]

    def watcher() -> None:
        while not stop.is_set():
            for name in ("threads", "background"):
                snapshot = counters(rt.stats()[name])
                if snapshot["submitted"] != accounted(snapshot):
                    bad.append(snapshot)
            snapshots[0] += 1

    async def coro(i: int) -> None:
        await asyncio.sleep(0)
        if i % 5 == 0:
            raise ValueError(i)

    def sync(i: int) -> None:
        if i % 5 == 0:
            raise ValueError(i)

    def producer() -> None:
        for i in range(400):
            try:
                task = rt.threads.spawn(sync, i) if i % 2 else rt.background.spawn(coro, i)
            except offload.Full:
                continue
            if i % 7 == 0:
                task.cancel()

    watch = threading.Thread(target=watcher)
    watch.start()
    producers = [threading.Thread(target=producer) for _ in range(8)]
    for t in producers:
        t.start()
    for t in producers:
        t.join(30)
    assert wait_until(lambda: snapshots[0] > 10)
    stop.set()
    watch.join(WAIT)
    assert rt.close(WAIT) == set()
    assert bad == []
    final = rt.stats()
    assert sum(final[n]["submitted"] for n in ("threads", "background")) == 8 * 400
    for name in ("threads", "background"):
        snapshot = counters(final[name])
        assert snapshot["submitted"] == accounted(snapshot)
        assert snapshot["pending"] == snapshot["running"] == 0
        assert (snapshot["dropped"] == 0) if on_full == "reject" else (snapshot["rejected"] == 0)


def test_percentiles_of_queue_wait_and_run_time(arun: Arun, runtime: MakeRuntime) -> None:
    """queue_wait and run_time give p50 <= p90 <= p99 (seconds) over every task that
    started / ran; with 10% of tasks sleeping 20 ms, p90 and p99 of run_time are >= 20 ms."""

    async def main() -> None:
        async with runtime() as rt:
            tasks = [rt.threads.spawn(int) for _ in range(90)]
            tasks += [rt.threads.spawn(threading.Event().wait, 0.02) for _ in range(10)]
            for task in tasks:
                await task
            stats = rt.threads.stats()
            for series in ("queue_wait", "run_time"):
                p = stats[series]
                assert p["count"] == 100
                assert 0.0 <= p["p50"] <= p["p90"] <= p["p99"]
            assert stats["run_time"]["p90"] >= 0.02 and stats["run_time"]["p99"] >= 0.02

    arun(main())


def test_tasks_that_never_started_are_not_in_the_percentiles(runtime: MakeRuntime) -> None:
    """Cancelled-before-start tasks have no queue wait or run time to count."""
    rt = runtime(threads=1)
    hold = Gate()
    first = rt.threads.spawn(hold.wait)
    for _ in range(5):
        rt.threads.spawn(int).cancel()
    hold.open()
    first.result(WAIT)
    stats = rt.threads.stats()
    assert stats["queue_wait"]["count"] == 1 and stats["run_time"]["count"] == 1
    assert stats["cancelled"] == 5


def test_stats_are_per_runtime(runtime: MakeRuntime) -> None:
    """Two runtimes count separately."""
    busy, idle = runtime(), runtime()
    for _ in range(4):
        busy.threads.spawn(int).result(WAIT)
    assert busy.threads.stats()["succeeded"] == 4
    assert idle.threads.stats()["submitted"] == 0
