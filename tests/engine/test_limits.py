"""Limits: max_running, max_pending and on_full ("reject", "drop", "block"), set for
every lane or per lane with `lanes={...}`."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import warnings
import weakref
from typing import Any

import pytest

import offload

from .conftest import Arun, MakeRuntime
from .support import (
    WAIT,
    Gate,
    Peak,
    accounted,
    async_wait_until,
    counters,
    lane_names_of,
    records_of,
    run_loop,
    wait_until,
)


def test_default_limits(runtime: MakeRuntime) -> None:
    """By default the threads lane runs `threads` at once and nothing else is bounded."""
    stats = runtime(threads=5).stats()
    assert (stats["threads"]["max_running"], stats["threads"]["max_pending"]) == (5, -1)
    for lane in ("loop", "background"):
        assert (stats[lane]["max_running"], stats[lane]["max_pending"]) == (-1, -1)


@pytest.mark.parametrize("where", ["top-level", "lanes override"])
def test_max_running_caps_concurrent_sync_tasks(runtime: MakeRuntime, where: str) -> None:
    """max_running=2 (for all lanes or for `threads` alone): never more than 2 at once."""
    if where == "top-level":
        rt = runtime(threads=8, max_running=2)
    else:
        rt = runtime(threads=8, lanes={"threads": {"max_running": 2}})
    hold, peak = Gate(), Peak()

    def work() -> None:
        with peak:
            hold.wait()

    tasks = [rt.threads.spawn(work) for _ in range(10)]
    assert wait_until(lambda: peak.now == 2)
    assert not wait_until(lambda: peak.now > 2, timeout=0.2)
    assert counters(rt.threads.stats())["pending"] == 8
    hold.open()
    for task in tasks:
        task.result(WAIT)
    assert peak.max == 2 and peak.entered == 10


@pytest.mark.parametrize("lane", ["loop", "background"])
def test_max_running_caps_concurrent_coroutines(
    arun: Arun, runtime: MakeRuntime, lane: str
) -> None:
    """max_running=2 on a loop lane: at most 2 coroutines have started and not finished."""

    async def main() -> None:
        async with runtime(lanes={lane: {"max_running": 2}}) as rt:
            hold, peak = Gate(), Peak()

            async def work() -> None:
                with peak:
                    await hold.async_wait()

            tasks = [lane_names_of(rt)[lane].spawn(work) for _ in range(8)]
            assert await async_wait_until(lambda: peak.now == 2)
            await asyncio.sleep(0.05)
            assert peak.now == 2
            stats = rt.stats()[lane]
            assert (stats["running"], stats["pending"]) == (2, 6)
            hold.open()
            for task in tasks:
                await task
            assert peak.max == 2 and peak.entered == 8

    arun(main())


def test_waiting_tasks_start_in_submission_order(runtime: MakeRuntime) -> None:
    """Tasks waiting for a slot start first in, first out."""
    rt = runtime(lanes={"threads": {"max_running": 1}})
    hold, order = Gate(), []
    rt.threads.spawn(hold.wait)
    tasks = [rt.threads.spawn(order.append, i) for i in range(20)]
    hold.open()
    for task in tasks:
        task.result(WAIT)
    assert order == list(range(20))


def test_reject_raises_full_and_the_target_never_runs(runtime: MakeRuntime) -> None:
    """on_full="reject": past max_running + max_pending, spawn raises offload.Full."""
    rt = runtime(lanes={"threads": {"max_running": 1, "max_pending": 2}})
    hold, ran = Gate(), []
    accepted = [rt.threads.spawn(hold.wait)]
    accepted += [rt.threads.spawn(ran.append, i) for i in range(2)]
    with pytest.raises(offload.Full):
        rt.threads.spawn(ran.append, "refused")
    assert counters(rt.threads.stats())["rejected"] == 1
    hold.open()
    for task in accepted:
        task.result(WAIT)
    assert ran == [0, 1]
    stats = counters(rt.threads.stats())
    assert stats == {**stats, "submitted": 4, "succeeded": 3, "rejected": 1}
    assert stats["submitted"] == accounted(stats)


def test_reject_closes_a_refused_coroutine(loop_kind: str, runtime: MakeRuntime) -> None:
    """A refused coroutine object is closed: it never runs and Python never warns that it
    was never awaited."""
    rt = runtime(lanes={"background": {"max_running": 1, "max_pending": 0}})
    hold, ran = Gate(), []

    async def work(label: str) -> None:
        ran.append(label)
        await hold.async_wait()

    first = rt.background.spawn(work("first"))
    refused = work("refused")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(offload.Full):
            rt.background.spawn(refused)
        assert refused.cr_frame is None  # closed
        del refused
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]
    hold.open()
    first.result(WAIT)
    assert ran == ["first"]


def test_a_refused_coroutine_is_not_kept_alive(loop_kind: str, runtime: MakeRuntime) -> None:
    """The engine lets go of a coroutine object it refused (nothing keeps it after the
    Full), so it is freed like any other."""
    rt = runtime(lanes={"background": {"max_running": 1, "max_pending": 0}})
    hold = Gate()

    async def work() -> None:
        await hold.async_wait()

    first = rt.background.spawn(work())
    refused = work()
    ref = weakref.ref(refused)
    with pytest.raises(offload.Full):
        rt.background.spawn(refused)
    del refused
    gc.collect()
    assert ref() is None
    hold.open()
    first.result(WAIT)


@pytest.mark.parametrize("lane", ["threads", "background"])
def test_drop_ends_the_task_cancelled_counts_and_logs_it(
    loop_kind: str, runtime: MakeRuntime, offload_log: pytest.LogCaptureFixture, lane: str
) -> None:
    """on_full="drop": spawn returns a task that is already cancelled, never runs, is
    counted as dropped (not cancelled) and logged once on the `offload` logger."""
    rt = runtime(lanes={lane: {"max_running": 1, "max_pending": 0, "on_full": "drop"}})
    hold, ran = Gate(), []

    async def coro_work(label: str) -> None:
        ran.append(label)
        await hold.async_wait()

    def sync_work(label: str) -> None:
        ran.append(label)
        hold.wait()

    work: Any = sync_work if lane == "threads" else coro_work
    first = lane_names_of(rt)[lane].spawn(work, "first")
    dropped = lane_names_of(rt)[lane].options(name="dropped-job").spawn(work, "dropped")
    assert dropped.state == "cancelled" and dropped.done() and dropped.cancelled()
    hold.open()
    first.result(WAIT)
    assert ran == ["first"]
    stats = counters(rt.stats()[lane])
    assert stats == {**stats, "submitted": 2, "succeeded": 1, "dropped": 1, "cancelled": 0}
    assert stats["submitted"] == accounted(stats)
    warnings_ = records_of(offload_log.records, logging.WARNING)
    assert len(warnings_) == 1
    assert "dropped-job" in warnings_[0].getMessage() and "dropped" in warnings_[0].getMessage()


def test_block_makes_a_thread_wait_for_room(runtime: MakeRuntime) -> None:
    """on_full="block": a spawning thread waits until a place frees, then its task runs."""
    rt = runtime(lanes={"threads": {"max_running": 1, "max_pending": 1, "on_full": "block"}})
    hold = Gate()
    first = rt.threads.spawn(hold.wait)
    second = rt.threads.spawn(lambda: "second")
    spawned: list[offload.Task[Any]] = []
    spawner = threading.Thread(target=lambda: spawned.append(rt.threads.spawn(lambda: "third")))
    spawner.start()
    spawner.join(0.2)
    assert spawner.is_alive() and spawned == []
    hold.open()
    spawner.join(WAIT)
    assert not spawner.is_alive()
    assert [t.result(WAIT) for t in (first, second, spawned[0])] == [True, "second", "third"]


def test_block_raises_full_on_an_event_loop_thread(arun: Arun, runtime: MakeRuntime) -> None:
    """on_full="block" never blocks a loop: there it raises Full; a thread in the same
    situation waits and succeeds."""

    async def main() -> None:
        async with runtime(
            lanes={"threads": {"max_running": 1, "max_pending": 0, "on_full": "block"}}
        ) as rt:
            hold = Gate()
            first = rt.threads.spawn(hold.wait)
            with pytest.raises(offload.Full):
                rt.threads.spawn(int)
            from_thread = asyncio.ensure_future(asyncio.to_thread(rt.threads.spawn, lambda: 7))
            await asyncio.sleep(0.05)
            assert not from_thread.done()
            hold.open()
            assert await first is True
            assert await (await from_thread) == 7

    arun(main())


def test_a_blocked_spawner_gets_closed_when_the_runtime_shuts_down(runtime: MakeRuntime) -> None:
    """A thread blocked by on_full="block" is released with offload.Closed by shutdown."""
    rt = runtime(lanes={"threads": {"max_running": 1, "max_pending": 0, "on_full": "block"}})
    hold = Gate()
    first = rt.threads.spawn(hold.wait)
    outcome: list[BaseException] = []

    def spawner() -> None:
        try:
            rt.threads.spawn(int)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            outcome.append(exc)

    thread = threading.Thread(target=spawner)
    thread.start()
    thread.join(0.1)
    closer = threading.Thread(target=rt.close, args=(WAIT,))
    closer.start()
    thread.join(WAIT)
    assert [type(e) for e in outcome] == [offload.Closed]
    hold.open()
    closer.join(WAIT)
    assert first.result(WAIT) is True


def test_stats_add_up_while_a_spawner_is_blocked(runtime: MakeRuntime) -> None:
    """The stats identity holds at every snapshot, also while a thread waits for room
    (a blocked spawn is counted once admission is decided)."""
    rt = runtime(lanes={"threads": {"max_running": 1, "max_pending": 1, "on_full": "block"}})
    hold = Gate()
    rt.threads.spawn(hold.wait)
    rt.threads.spawn(int)
    spawner = threading.Thread(target=rt.threads.spawn, args=(int,))
    spawner.start()
    try:
        spawner.join(0.1)
        assert spawner.is_alive()
        stats = counters(rt.threads.stats())
        assert stats["submitted"] == accounted(stats), stats
    finally:
        hold.open()
        spawner.join(WAIT)


def test_cancelling_a_waiting_task_frees_its_place(runtime: MakeRuntime) -> None:
    """A task cancelled while waiting gives its max_pending place back and never runs."""
    rt = runtime(lanes={"threads": {"max_running": 1, "max_pending": 1}})
    hold, ran = Gate(), []
    first = rt.threads.spawn(hold.wait)
    waiting = rt.threads.spawn(ran.append, "cancelled")
    with pytest.raises(offload.Full):
        rt.threads.spawn(ran.append, "refused")
    assert waiting.cancel()
    replacement = rt.threads.spawn(ran.append, "replacement")
    hold.open()
    first.result(WAIT)
    replacement.result(WAIT)
    assert ran == ["replacement"]
    stats = counters(rt.threads.stats())
    assert stats == {**stats, "submitted": 4, "succeeded": 2, "cancelled": 1, "rejected": 1}


def test_per_lane_overrides_apply_to_their_lane_only(loop_kind: str, runtime: MakeRuntime) -> None:
    """Top-level limits apply to every lane; `lanes={"threads": {...}}` overrides them there."""
    rt = runtime(
        max_running=1,
        max_pending=0,
        lanes={"threads": {"max_pending": 1, "on_full": "drop"}},
    )
    stats = rt.stats()
    assert [(stats[n]["max_running"], stats[n]["max_pending"]) for n in ("loop", "background")] == [
        (1, 0),
        (1, 0),
    ]
    assert (stats["threads"]["max_running"], stats["threads"]["max_pending"]) == (1, 1)
    hold = Gate()

    async def sleeper() -> None:
        await hold.async_wait()

    running_coro = rt.background.spawn(sleeper)
    with pytest.raises(offload.Full):  # top-level: reject, nothing may wait
        rt.background.spawn(sleeper)
    first = rt.threads.spawn(hold.wait)
    queued = rt.threads.spawn(int)  # threads: one may wait
    dropped = rt.threads.spawn(int)  # then drop
    assert dropped.cancelled() and not queued.done()
    hold.open()
    for task in (running_coro, first, queued):
        task.result(WAIT)
    final = rt.stats()
    assert (final["background"]["rejected"], final["threads"]["dropped"]) == (1, 1)


def test_a_loop_lane_slot_is_not_kept_by_a_task_whose_loop_has_closed(
    loop_kind: str, runtime: MakeRuntime
) -> None:
    """max_running=1 on the loop lane: after one short-lived loop ends with tasks still
    running and waiting there, the next loop's task still gets to run."""
    rt = runtime(lanes={"loop": {"max_running": 1}})

    async def first_loop() -> None:
        rt.loop.spawn(asyncio.sleep, 3600)
        rt.loop.spawn(asyncio.sleep, 3600)  # waits for the slot
        await asyncio.sleep(0.01)

    run_loop(loop_kind, first_loop())

    async def next_loop() -> str:
        return await asyncio.wait_for(_await(rt.loop.spawn(asyncio.sleep, 0, "ran")), 2.0)

    assert run_loop(loop_kind, next_loop()) == "ran"


async def _await(task: offload.Task[Any]) -> Any:
    return await task


def test_tasks_cancelled_while_queued_are_freed(runtime: MakeRuntime) -> None:
    """A task cancelled in the waiting queue leaves a stale entry there; once no task
    waits, nothing pops them, so they used to keep every such Task alive (found by the
    scheduled-task memory benchmark: 100,000 of 100,000 still alive after close)."""
    rt = runtime(lanes={"threads": {"max_running": 1}})
    gate = Gate()
    blocker = rt.threads.spawn(gate.wait)

    def live_tasks() -> int:
        gc.collect()
        return sum(type(o) is offload.Task for o in gc.get_objects())

    before = live_tasks()
    queued = [rt.threads.spawn(abs, -i) for i in range(1000)]
    for t in queued:
        assert t.cancel()
    del queued, t
    gate.open()
    blocker.result(timeout=WAIT)
    del blocker  # (live tasks are invisible to the GC: it wasn't in `before` either)
    assert live_tasks() <= before
