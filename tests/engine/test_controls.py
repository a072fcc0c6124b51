"""Task controls (issue 12): timeouts, retries with backoff, delays and `at=`, dedup
keys, per-key limits, and task lookup, on every lane each applies to.

Timing: no test waits long. Delays are short or the engine clock is moved forward with
`Runtime._advance_clock` (tests move no clock by sleeping); assertions on time are lower
bounds ("not before") or generous upper bounds ("does not hang").
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import logging
import os
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

import offload

from .conftest import Arun, MakeRuntime
from .support import WAIT, Gate, accounted, async_wait_until, wait_until

# --- helpers --------------------------------------------------------------------------


class Flaky:
    """Fails with `exc` until its `succeed_on`-th call, recording when each call began."""

    def __init__(self, succeed_on: int, exc: type[BaseException] = ConnectionError) -> None:
        self.succeed_on = succeed_on
        self.exc = exc
        self.calls: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            self.calls.append(time.monotonic())
            n = len(self.calls)
        if n < self.succeed_on:
            raise self.exc(f"attempt {n} failed")
        return f"ok after {n}"


class AsyncFlaky(Flaky):
    async def run(self) -> str:
        await asyncio.sleep(0)
        return self()


def failures(log: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in log.records if r.levelno >= logging.ERROR and "failed" in r.getMessage()]


def _count_call(path: str) -> int:
    """A processes-lane target: counts its calls in a file, fails until the third."""
    with open(path, "a") as f:
        f.write("x")
    n = Path(path).stat().st_size
    if n < 3:
        raise ConnectionError(f"attempt {n} failed")
    return n


def _sleep_then(seconds: float, value: int) -> int:
    time.sleep(seconds)
    return value


def _pid() -> int:
    return os.getpid()


# --- retries --------------------------------------------------------------------------


def test_a_three_attempt_retry_whose_awaiter_sees_only_the_final_error(
    runtime: MakeRuntime, offload_log: pytest.LogCaptureFixture
) -> None:
    rt = runtime()
    flaky = Flaky(succeed_on=99)
    task = rt.threads.options(retries=2, backoff=0.01).spawn(flaky)
    with pytest.raises(ConnectionError, match="attempt 3 failed"):
        task.result(timeout=WAIT)
    assert (task.attempt, task.state, len(flaky.calls)) == (3, "failed", 3)
    wait_until(lambda: len(failures(offload_log)) > 0)
    assert len(failures(offload_log)) == 1  # only the last failure is reported
    retried = [r for r in offload_log.records if "will be retried" in r.getMessage()]
    assert len(retried) == 2 and all(r.levelno == logging.DEBUG for r in retried)
    stats = rt.stats()["threads"]
    assert (stats["retried"], stats["failed"], stats["retrying"]) == (2, 1, 0)
    assert stats["submitted"] == accounted(stats)
    assert rt.attempts()["Flaky"] == {"attempts": 3, "retries": 2}


def test_retries_until_success_on_the_loop_lane_with_a_fresh_coroutine_each_time(
    arun: Arun, runtime: MakeRuntime
) -> None:
    rt = runtime()
    flaky = AsyncFlaky(succeed_on=3)

    async def main() -> None:
        task = rt.loop.options(retries=5, backoff=offload.Backoff(0.001, 2, 0.01)).spawn(flaky.run)
        assert await task == "ok after 3"
        assert task.attempt == 3
        assert rt.stats()["loop"]["retried"] == 2

    arun(main())


def test_awaiting_a_retried_task_gives_the_final_outcome_on_background(
    arun: Arun, runtime: MakeRuntime
) -> None:
    rt = runtime()
    flaky = AsyncFlaky(succeed_on=99, exc=ValueError)

    async def main() -> None:
        task = rt.background.options(retries=1, backoff=0).spawn(flaky.run)
        with pytest.raises(ValueError, match="attempt 2 failed"):
            await task
        assert task.attempt == 2

    arun(main())


def test_retries_on_the_processes_lane(runtime: MakeRuntime, tmp_path: Path) -> None:
    rt = runtime(processes=1)
    counter = str(tmp_path / "calls")
    task = rt.processes.options(retries=3, backoff=0).spawn(_count_call, counter)
    assert task.result(timeout=60) == 3
    assert task.attempt == 3


def test_backoff_waits_grow_and_are_never_shorter_than_asked(runtime: MakeRuntime) -> None:
    rt = runtime()
    flaky = Flaky(succeed_on=4)
    backoff = offload.Backoff(initial=0.05, factor=2, max=10, jitter=False)
    task = rt.threads.options(retries=3, backoff=backoff).spawn(flaky)
    assert task.result(timeout=WAIT) == "ok after 4"
    gaps = [b - a for a, b in zip(flaky.calls, flaky.calls[1:])]
    for gap, asked in zip(gaps, (0.05, 0.1, 0.2)):
        assert gap >= asked * 0.95, (gaps, asked)


def test_retry_on_limits_which_errors_are_retried(runtime: MakeRuntime) -> None:
    rt = runtime()
    flaky = Flaky(succeed_on=99, exc=KeyError)
    task = rt.threads.options(retries=5, backoff=0, retry_on=ConnectionError).spawn(flaky)
    with pytest.raises(KeyError):
        task.result(timeout=WAIT)
    assert task.attempt == 1  # not retried


def test_raising_retry_asks_for_another_attempt_with_its_delay(runtime: MakeRuntime) -> None:
    rt = runtime()
    calls: list[float] = []

    def poll() -> str:
        calls.append(time.monotonic())
        if len(calls) < 2:
            raise offload.Retry(delay=0.05)
        return "ready"

    # retry_on excludes the Retry's type: an explicit Retry is still retried.
    task = rt.threads.options(retries=1, backoff=30, retry_on=KeyError).spawn(poll)
    assert task.result(timeout=WAIT) == "ready"
    assert calls[1] - calls[0] >= 0.045


def test_a_retrying_task_can_be_cancelled_and_is_never_run_again(runtime: MakeRuntime) -> None:
    rt = runtime()
    flaky = Flaky(succeed_on=99)
    task = rt.threads.options(retries=5, backoff=3600).spawn(flaky)
    wait_until(lambda: task.state == "retrying")
    assert rt.stats()["threads"]["retrying"] == 1
    assert task.cancel()
    assert task.state == "cancelled" and len(flaky.calls) == 1
    assert rt._timers_armed() == 0
    assert rt.stats()["threads"]["retrying"] == 0


def test_cancellation_is_never_retried(arun: Arun, runtime: MakeRuntime) -> None:
    rt = runtime()
    started = 0

    async def forever() -> None:
        nonlocal started
        started += 1
        await asyncio.sleep(3600)

    async def main() -> None:
        task = rt.loop.options(retries=5, retry_on=BaseException, backoff=0).spawn(forever)
        await async_wait_until(lambda: started == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.attempt == 1

    arun(main())


# --- timeouts ---------------------------------------------------------------------------


def test_timeout_on_the_threads_lane_fails_at_the_deadline_and_counts_the_overrun(
    runtime: MakeRuntime,
) -> None:
    rt = runtime()
    release = Gate()

    def stuck() -> str:
        release.wait()
        return "late"

    task = rt.threads.options(timeout=0.05).spawn(stuck)
    with pytest.raises(TimeoutError, match=r"timed out after 0\.05 s \(attempt 1\)"):
        task.result(timeout=WAIT)
    stats = rt.stats()["threads"]
    assert (stats["overrun"], stats["timed_out"], stats["running"]) == (1, 1, 0)
    release.open()
    wait_until(lambda: rt.stats()["threads"]["overrun"] == 0)
    assert task.state == "failed"  # the late result is discarded
    assert isinstance(task.exception(), TimeoutError)


def test_timeout_with_retries_on_threads_reruns_while_the_old_call_still_runs(
    runtime: MakeRuntime,
) -> None:
    rt = runtime()
    release = Gate()
    calls = Flaky(succeed_on=99)

    def maybe_stuck() -> str:
        try:
            calls()
        except ConnectionError:
            if len(calls.calls) == 1:
                release.wait()  # the first attempt overruns its timeout
                return "late"
        return "second"

    task = rt.threads.options(timeout=0.1, retries=1, backoff=0).spawn(maybe_stuck)
    assert task.result(timeout=WAIT) == "second"
    assert task.attempt == 2
    assert rt.stats()["threads"]["overrun"] == 1
    release.open()
    wait_until(lambda: rt.stats()["threads"]["overrun"] == 0)
    assert task.result() == "second"


@pytest.mark.parametrize("lane", ["loop", "background"])
def test_timeout_cancels_the_coroutine(arun: Arun, runtime: MakeRuntime, lane: str) -> None:
    rt = runtime()
    cleaned = threading.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cleaned.set()

    async def main() -> None:
        task = rt.options(lane=lane, timeout=0.05).spawn(slow)  # type: ignore[arg-type]
        with pytest.raises(TimeoutError, match="timed out after 0.05 s"):
            await task
        assert cleaned.is_set()
        assert rt.stats()[lane]["timed_out"] == 1

    arun(main())


def test_a_coroutine_that_swallows_the_timeout_still_times_out(
    arun: Arun, runtime: MakeRuntime
) -> None:
    rt = runtime()

    async def stubborn() -> str:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            return "swallowed"
        return "never"

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await rt.loop.options(timeout=0.05).spawn(stubborn)

    arun(main())


def test_timeout_on_the_processes_lane_kills_and_replaces_the_worker(
    runtime: MakeRuntime,
) -> None:
    rt = runtime(processes=1)
    before = rt.processes.spawn(_pid).result(timeout=60)
    task = rt.processes.options(timeout=0.5).spawn(_sleep_then, 3600, 1)
    with pytest.raises(TimeoutError):
        task.result(timeout=60)
    after = rt.processes.spawn(_pid).result(timeout=60)
    assert after != before  # a new worker took the killed one's place
    assert rt.processes.spawn(_sleep_then, 0, 7).result(timeout=60) == 7


def test_the_timeout_applies_to_each_attempt_not_to_the_wait(
    arun: Arun, runtime: MakeRuntime
) -> None:
    rt = runtime()

    async def main() -> None:
        # Scheduled for a while, then quick: the timeout counts from the start.
        task = rt.loop.options(delay=0.1, timeout=0.5).spawn(asyncio.sleep, 0.01)
        await task
        assert task.state == "succeeded"

    arun(main())


# --- delays -------------------------------------------------------------------------------


def test_a_delayed_task_is_scheduled_then_runs(runtime: MakeRuntime) -> None:
    rt = runtime()
    spawned = time.monotonic()
    task = rt.threads.options(delay=0.1).spawn(time.monotonic)
    assert task.state == "scheduled"
    assert task.scheduled_for is not None and task.scheduled_for > time.time()
    assert rt.stats()["threads"]["scheduled"] == 1
    started = task.result(timeout=WAIT)
    assert started - spawned >= 0.095
    assert rt.stats()["threads"]["scheduled"] == 0


def test_cancel_works_while_scheduled(arun: Arun, runtime: MakeRuntime) -> None:
    rt = runtime()
    ran = []

    async def job() -> None:
        ran.append(1)

    async def main() -> None:
        task = rt.loop.options(delay=3600).spawn(job)
        assert task.cancel() and task.state == "cancelled"
        with pytest.raises(asyncio.CancelledError):
            await task
        rt._advance_clock(7200)
        await asyncio.sleep(0.05)
        assert ran == [] and rt._timers_armed() == 0

    arun(main())


def test_at_runs_at_a_wall_clock_time_moved_by_the_engine_clock(runtime: MakeRuntime) -> None:
    rt = runtime()
    when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=2)
    task = rt.threads.options(at=when).spawn(lambda: "at two")
    assert task.state == "scheduled"
    assert abs(task.scheduled_for - when.timestamp()) < 5  # type: ignore[operator]
    rt._advance_clock(2 * 3600)
    assert task.result(timeout=WAIT) == "at two"
    past = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
    assert rt.threads.options(at=past).spawn(lambda: "now").result(timeout=WAIT) == "now"


def test_ten_thousand_delayed_tasks_cancelled_leave_no_memory_behind(
    runtime: MakeRuntime,
) -> None:
    rt = runtime()
    view = rt.threads.options(delay=3600)

    def one_round() -> None:
        tasks = [view.spawn(abs, -i) for i in range(10_000)]
        assert rt._timers_armed() == 10_000
        for t in tasks:
            t.cancel()

    def live_task_objects() -> int:
        return sum(type(o) is offload.Task for o in gc.get_objects())

    one_round()  # warm-up: caches, interned names, the heap's first growth
    gc.collect()
    tasks_before = live_task_objects()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        one_round()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert rt._timers_armed() == 0 and rt._live_tasks() == []
    assert live_task_objects() == tasks_before
    assert after - before < 64 * 1024, after - before  # not ~10,000 tasks' worth
    assert rt.stats()["threads"]["scheduled"] == 0


# --- drain and shutdown -------------------------------------------------------------------


def test_drain_waits_for_scheduled_and_retrying_tasks(arun: Arun, runtime: MakeRuntime) -> None:
    rt = runtime()
    flaky = AsyncFlaky(succeed_on=2)

    async def main() -> None:
        scheduled = rt.loop.options(delay=0.05).spawn(asyncio.sleep, 0)
        retrying = rt.loop.options(retries=1, backoff=0.05).spawn(flaky.run)
        assert await rt.drain(timeout=WAIT) == set()
        assert scheduled.state == retrying.state == "succeeded"

    arun(main())


def test_drain_returns_scheduled_tasks_unfinished_at_its_timeout(
    arun: Arun, runtime: MakeRuntime
) -> None:
    rt = runtime()

    async def main() -> None:
        task = rt.loop.options(delay=3600).spawn(asyncio.sleep, 0)
        assert await rt.drain(timeout=0.05) == {task}
        assert task.state == "scheduled"
        task.cancel()

    arun(main())


def test_shutdown_cancels_scheduled_and_retrying_tasks_and_names_each(
    arun: Arun, runtime: MakeRuntime, offload_log: pytest.LogCaptureFixture
) -> None:
    rt = runtime()
    flaky = AsyncFlaky(succeed_on=99)

    async def main() -> None:
        scheduled = rt.loop.options(delay=3600, name="nightly-report").spawn(asyncio.sleep, 0)
        retrying = rt.loop.options(retries=3, backoff=3600, name="webhook").spawn(flaky.run)
        await async_wait_until(lambda: retrying.state == "retrying")
        unfinished = await rt.shutdown(timeout=1)
        assert unfinished == {scheduled, retrying}
        assert scheduled.cancelled() and retrying.cancelled()

    arun(main())
    messages = [r.getMessage() for r in offload_log.records]
    for name in ("nightly-report", "webhook"):
        assert any(name in m and "did not finish before shutdown" in m for m in messages)
    assert rt._timers_armed() == 0


# --- dedup keys ---------------------------------------------------------------------------


def test_key_joins_the_task_already_holding_it(arun: Arun, runtime: MakeRuntime) -> None:
    rt = runtime()
    calls = 0

    async def refresh() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return calls

    async def main() -> None:
        view = rt.loop.options(key="user:42:refresh")
        first = view.spawn(refresh)
        second = view.spawn(refresh)
        assert first is second
        assert await first == 1
        third = view.spawn(refresh)  # the key is free once the task ended
        assert third is not first and await third == 2

    arun(main())


def test_key_join_closes_a_coroutine_object_that_will_not_run(
    arun: Arun, runtime: MakeRuntime
) -> None:
    rt = runtime()

    async def main() -> None:
        first = rt.loop.options(key="k").spawn(asyncio.sleep(0.05))
        second_coro = asyncio.sleep(0.05)
        assert rt.loop.options(key="k").spawn(second_coro) is first
        assert second_coro.cr_frame is None  # closed: no "never awaited" warning
        await first

    arun(main())


def test_key_reject_raises_duplicate_naming_the_holder(runtime: MakeRuntime) -> None:
    rt = runtime()
    gate = Gate()
    first = rt.threads.options(key="report").spawn(gate.wait)
    with pytest.raises(offload.Duplicate, match="a task with key 'report' is already") as info:
        rt.threads.options(key="report", on_duplicate="reject").spawn(gate.wait)
    assert info.value.task is first
    gate.open()
    first.result(timeout=WAIT)


def test_key_replace_cancels_the_holder(arun: Arun, runtime: MakeRuntime) -> None:
    rt = runtime()

    async def main() -> None:
        old = rt.loop.options(key="k", delay=3600).spawn(asyncio.sleep, 0)
        new = rt.loop.options(key="k", on_duplicate="replace").spawn(asyncio.sleep, 0, "new")
        assert old.cancelled() and new is not old
        assert await new == "new"

    arun(main())


def test_two_runtimes_do_not_share_keys(runtime: MakeRuntime) -> None:
    a, b = runtime(), runtime()
    gate = Gate()
    ta = a.threads.options(key="same").spawn(gate.wait)
    tb = b.threads.options(key="same").spawn(gate.wait)
    assert ta is not tb
    gate.open()
    assert ta.result(timeout=WAIT) and tb.result(timeout=WAIT)


# --- per-key limits -------------------------------------------------------------------------


def test_limit_key_runs_at_most_limit_at_once_across_lanes_in_order(
    arun: Arun, runtime: MakeRuntime
) -> None:
    rt = runtime()
    lock = threading.Lock()
    now = peak = 0
    order: list[int] = []

    def enter(i: int) -> None:
        nonlocal now, peak
        with lock:
            now += 1
            peak = max(peak, now)
            order.append(i)

    def leave() -> None:
        nonlocal now
        with lock:
            now -= 1

    def sync_job(i: int) -> None:
        enter(i)
        time.sleep(0.02)
        leave()

    async def async_job(i: int) -> None:
        enter(i)
        await asyncio.sleep(0.02)
        leave()

    async def main() -> None:
        view = rt.options(limit_key="tenant:7", limit=2)
        tasks = [view.spawn(sync_job, i) if i % 2 else view.spawn(async_job, i) for i in range(12)]
        assert sum(t.state == "pending" for t in tasks) >= 10
        for t in tasks:
            await t
        assert peak == 2
        assert sorted(order) == list(range(12))

    arun(main())


def test_limit_key_waiters_start_in_spawn_order(arun: Arun, runtime: MakeRuntime) -> None:
    """With limit=1 one task runs at a time, so start order is admission order: the
    waiting ones are admitted in the order they were spawned, across lanes."""
    rt = runtime()
    order: list[int] = []

    def sync_job(i: int) -> None:
        order.append(i)
        time.sleep(0.005)

    async def async_job(i: int) -> None:
        order.append(i)
        await asyncio.sleep(0.005)

    async def main() -> None:
        view = rt.options(limit_key="serial", limit=1)
        tasks = [view.spawn(sync_job, i) if i % 2 else view.spawn(async_job, i) for i in range(12)]
        for t in tasks:
            await t
        assert order == list(range(12))

    arun(main())


def test_a_task_cancelled_while_waiting_for_its_key_never_runs(runtime: MakeRuntime) -> None:
    rt = runtime()
    gate = Gate()
    ran: list[str] = []
    view = rt.threads.options(limit_key="k", limit=1)
    holder = view.spawn(gate.wait)
    waiting = view.spawn(ran.append, "cancelled one")
    after = view.spawn(ran.append, "next one")
    assert waiting.cancel()
    gate.open()
    after.result(timeout=WAIT)
    holder.result(timeout=WAIT)
    assert ran == ["next one"]


# --- lookup ---------------------------------------------------------------------------------


def test_get_finds_live_and_finished_tasks(runtime: MakeRuntime) -> None:
    rt = runtime()
    gate = Gate()
    live = rt.threads.options(name="live-one", key="k1").spawn(gate.wait)
    info = rt.get(live.id)
    assert info is not None and info.task is live
    assert (info.name, info.state, info.key, info.lane) == ("live-one", info.state, "k1", "threads")
    assert info.state in ("pending", "running")

    def broken() -> None:
        raise ValueError("no such user")

    failed = rt.threads.spawn(broken)
    with pytest.raises(ValueError):
        failed.result(timeout=WAIT)
    done = rt.get(failed.id)
    assert done is not None and done.task is None
    assert (done.state, done.error, done.error_type) == (
        "failed",
        "ValueError: no such user",
        "ValueError",
    )
    assert done.finished_at is not None and done.started_at is not None
    assert done.as_dict()["error"] == "ValueError: no such user"
    gate.open()
    live.result(timeout=WAIT)
    assert rt.get(live.id).state == "succeeded"  # type: ignore[union-attr]
    assert rt.get(10**12) is None


def test_tasks_filters_and_keep_finished_bounds_the_records(runtime: MakeRuntime) -> None:
    rt = runtime(keep_finished=3)
    for i in range(5):
        rt.threads.options(name=f"job-{i}").spawn(abs, i).result(timeout=WAIT)
    names = [info.name for info in rt.tasks()]
    assert names == ["job-4", "job-3", "job-2"]  # newest first, 3 kept
    assert [i.name for i in rt.tasks(name="job-3")] == ["job-3"]
    assert rt.tasks(state="failed") == []
    assert len(rt.tasks(limit=1)) == 1


def test_keep_finished_ttl_forgets_old_records(runtime: MakeRuntime) -> None:
    rt = runtime(keep_finished_ttl=0.05)
    task = rt.threads.spawn(abs, 1)
    task.result(timeout=WAIT)
    assert rt.get(task.id) is not None
    time.sleep(0.1)
    assert rt.get(task.id) is None


def test_offload_get_uses_the_default_runtime(runtime: MakeRuntime) -> None:
    previous = offload._replace_default_runtime(runtime())  # a stand-in, not the real one
    try:
        task = offload.threads.spawn(abs, -5)
        assert task.result(timeout=WAIT) == 5
        info = offload.get(task.id)
        assert info is not None and info.state == "succeeded"
    finally:
        offload._replace_default_runtime(previous)


# --- every control on every lane -----------------------------------------------------------

LANES = ("loop", "background", "threads", "processes")


def _call_for(lane: str) -> tuple[Any, ...]:
    """A target and arguments that give 32 on `lane` (picklable for processes)."""
    return (asyncio.sleep, 0, 32) if lane in ("loop", "background") else (pow, 2, 5)


@pytest.mark.parametrize("lane", LANES)
def test_delay_key_and_limit_on_every_lane(arun: Arun, runtime: MakeRuntime, lane: str) -> None:
    rt = runtime(processes=1)
    view = rt.options(lane=lane)  # type: ignore[arg-type]

    async def main() -> None:
        delayed = view.options(delay=3600).spawn(*_call_for(lane))
        assert delayed.state == "scheduled" and rt.stats()[lane]["scheduled"] == 1
        rt._advance_clock(3600)
        assert await delayed == 32
        keyed = view.options(key="same", delay=3600)
        first = keyed.spawn(*_call_for(lane))
        assert keyed.spawn(*_call_for(lane)) is first
        first.cancel()
        limited = view.options(limit_key="one", limit=1)
        tasks = [limited.spawn(*_call_for(lane)) for _ in range(4)]
        assert [await t for t in tasks] == [32] * 4
        assert rt.stats()[lane]["submitted"] == 6

    arun(main(), timeout=120)
    assert rt._timers_armed() == 0


@pytest.mark.parametrize("lane", ["threads", "loop"])
def test_due_tasks_handed_over_without_the_gil_while_others_cancel_them(
    arun: Arun, runtime: MakeRuntime, lane: str
) -> None:
    """The timer thread hands due tasks to an idle worker or to their loop without the
    GIL while another thread cancels some of them: each ends exactly once, succeeded or
    cancelled, and the stats add up."""
    rt = runtime(min_threads=2)
    rt.threads.spawn(abs, 1).result(timeout=WAIT)  # the pool has idle workers now
    n = 600

    async def main() -> None:
        args = _call_for(lane)
        tasks = [
            rt.options(lane=lane, delay=0.0005 * (i % 40)).spawn(*args)  # type: ignore[arg-type]
            for i in range(n)
        ]

        def cancel_some() -> None:
            for t in tasks[::3]:
                t.cancel()

        canceller = threading.Thread(target=cancel_some)
        canceller.start()
        for t in tasks:
            try:
                assert await t == 32
            except asyncio.CancelledError:
                pass
        canceller.join()
        assert all(t.state in ("succeeded", "cancelled") for t in tasks)
        stats = rt.stats()[lane]
        assert stats["succeeded"] + stats["cancelled"] >= n
        assert stats["submitted"] == accounted(stats)
        assert rt._timers_armed() == 0

    arun(main(), timeout=120)


def test_tasks_filters_live_tasks_by_state_lane_key_and_name(runtime: MakeRuntime) -> None:
    rt = runtime()
    gate = Gate()
    scheduled = rt.threads.options(delay=3600, key="later", name="nightly").spawn(abs, 1)
    running = rt.threads.options(name="busy").spawn(gate.wait)
    wait_until(lambda: running.state == "running")
    assert [i.id for i in rt.tasks(state="scheduled")] == [scheduled.id]
    assert [i.id for i in rt.tasks(state="running", lane="threads")] == [running.id]
    assert [i.id for i in rt.tasks(key="later")] == [scheduled.id]
    assert [i.id for i in rt.tasks(name="busy")] == [running.id]
    assert rt.tasks(lane="loop") == [] and rt.tasks(state="retrying") == []
    assert len(rt.tasks(limit=1)) == 1
    scheduled.cancel()
    gate.open()
    running.result(timeout=WAIT)
    assert [i.state for i in rt.tasks(name="nightly")] == ["cancelled"]
    assert [i.state for i in rt.tasks(key="later", state="cancelled")] == ["cancelled"]
