"""Periodic work (issue 12): offload.every, offload.cron, @offload.periodic, Schedule.

No test waits for a period to pass: each moves its runtime's engine clock with
`rt._advance_clock(seconds)` (monotonic and wall time alike) and then waits, bounded,
for what the timer thread does. Periods are an hour (`P`) and cron tests start half a
minute before a boundary, so real time passing on a loaded machine never fires a run a
test did not ask for. A test that moves the clock again first waits for the run before
(a run still going would make the next one skip). Every test that runs a loop runs on
asyncio and uvloop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from waiting import async_wait_until

import offload
from offload import _periodic

from .conftest import Arun, MakeRuntime
from .support import WAIT, run_python


class Calls:
    """A thread-safe record of runs: a sync job, an async one, and a gated one."""

    def __init__(self) -> None:
        self.count = 0
        self.threads: list[str] = []
        self.gate = threading.Event()
        self._lock = threading.Lock()

    def job(self, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        with self._lock:
            self.count += 1
            self.threads.append(threading.current_thread().name)
        return (args, kwargs)

    async def async_job(self) -> str:
        with self._lock:
            self.count += 1
        return "async"

    def blocking_job(self) -> None:
        with self._lock:
            self.count += 1
        self.gate.wait(3 * WAIT)


async def until(predicate: Any) -> None:
    """Wait, bounded generously (a loaded shared machine), for what the timer thread does."""
    assert await async_wait_until(predicate, 3 * WAIT), "the timer thread did not get there"


async def nothing_more_happens() -> None:
    """A moment for a wrong run to show up (can only miss a bug, never fail a good run)."""
    await asyncio.sleep(0.2)


#: The period of the `every` schedules: no test lives through one in real time.
P = 3600.0


def seconds_until(rt: offload.Runtime, when: datetime | None) -> float:
    assert when is not None
    return when.timestamp() - rt._wall_time()


def advance_past(rt: offload.Runtime, when: datetime | None) -> None:
    """Move the engine clock just past `when`."""
    rt._advance_clock(max(0.0, seconds_until(rt, when)) + 0.01)


def at_half_past_a_minute(rt: offload.Runtime) -> None:
    """Move the engine's wall clock to hh:mm:30: the next minute boundary is 30 s of
    real time away."""
    rt._advance_clock((30.0 - rt._wall_time() % 60.0) % 60.0)


# --- every ------------------------------------------------------------------------------------


def test_every_runs_once_per_period_as_the_clock_moves(runtime: MakeRuntime, arun: Arun) -> None:
    calls = Calls()

    async def main() -> None:
        rt = runtime()
        s = offload.every(P, calls.job, 1, runtime=rt, key="v")
        assert rt.schedules() == [s]
        assert s.name == calls.job.__qualname__ and s.runs == 0 and s.last_task is None
        assert P - 1 < seconds_until(rt, s.next_run) <= P
        rt._advance_clock(P / 2)  # half a period: not due yet
        await nothing_more_happens()
        assert s.runs == 0 and calls.count == 0
        for n in (1, 2, 3):
            rt._advance_clock(P / 2 if n == 1 else P)
            await until(lambda n=n: s.runs == n)
            task = s.last_task
            assert task is not None and task.name == s.name and task.lane == "threads"
            assert await task == ((1,), {"key": "v"})
            # the next run is one period after the one just due: no drift
            assert P - 1 < seconds_until(rt, s.next_run) <= P
        assert calls.count == 3 and s.skipped == 0
        assert rt.stats()["threads"]["succeeded"] == 3
        assert s.cancel() is True
        await rt.shutdown(5)

    arun(main())


def test_every_runs_a_coroutine_function_on_the_home_loop(runtime: MakeRuntime, arun: Arun) -> None:
    calls = Calls()

    async def main() -> None:
        async with runtime() as rt:
            s = offload.every(P, calls.async_job, runtime=rt)
            b = offload.every(P, calls.async_job, runtime=rt, lane="background", name="bg")
            rt._advance_clock(P)
            await until(lambda: s.runs >= 1 and b.runs >= 1)
            assert s.last_task is not None and b.last_task is not None
            assert s.last_task.lane == "loop" and await s.last_task == "async"
            assert b.last_task.lane == "background" and b.last_task.name == "bg"
            await b.last_task

    arun(main())


def test_a_clock_jump_over_many_periods_gives_one_run_not_a_burst(
    runtime: MakeRuntime, arun: Arun
) -> None:
    calls = Calls()

    async def main() -> None:
        rt = runtime()
        s = offload.every(P, calls.job, runtime=rt)
        rt._advance_clock(100.5 * P)
        await until(lambda: s.runs == 1)
        await nothing_more_happens()
        assert s.runs == 1 and s.skipped == 0
        assert 0 < seconds_until(rt, s.next_run) <= P
        await rt.shutdown(5)

    arun(main())


def test_jitter_delays_each_run_by_up_to_jitter(runtime: MakeRuntime) -> None:
    rt = runtime()
    schedules = [offload.every(P, print, runtime=rt, jitter=5) for _ in range(20)]
    delays = [seconds_until(rt, s.next_run) for s in schedules]
    assert all(P - 1 < d <= P + 5 for d in delays), delays
    assert len({round(d, 3) for d in delays}) > 1  # spread, not one fixed offset
    rt.close(5)
    assert all(s.cancelled and s.next_run is None for s in schedules)


# --- cron -------------------------------------------------------------------------------------


def test_cron_runs_at_each_minute_boundary(runtime: MakeRuntime, arun: Arun) -> None:
    calls = Calls()

    async def main() -> None:
        rt = runtime()
        at_half_past_a_minute(rt)
        s = offload.cron("* * * * *", calls.job, runtime=rt)
        first = s.next_run
        assert first is not None and first.tzinfo is timezone.utc
        assert (first.second, first.microsecond) == (0, 0)
        assert 0 < seconds_until(rt, first) <= 60
        rt._advance_clock(seconds_until(rt, first) - 1)  # a second before: nothing
        await nothing_more_happens()
        assert s.runs == 0
        rt._advance_clock(1.01)
        await until(lambda: s.runs == 1)
        assert s.next_run == first + timedelta(minutes=1)
        assert s.last_task is not None
        await s.last_task
        rt._advance_clock(60)
        await until(lambda: s.runs == 2)
        assert s.next_run == first + timedelta(minutes=2)
        assert s.last_task is not None
        await s.last_task
        assert calls.count == 2
        await rt.shutdown(5)

    arun(main())


def test_cron_every_five_minutes_runs_on_multiples_of_five(
    runtime: MakeRuntime, arun: Arun
) -> None:
    calls = Calls()

    async def main() -> None:
        rt = runtime()
        at_half_past_a_minute(rt)
        s = offload.cron("*/5 * * * *", calls.job, runtime=rt)
        first = s.next_run
        assert first is not None and first.minute % 5 == 0 and first.second == 0
        advance_past(rt, first)
        await until(lambda: s.runs == 1)
        assert s.next_run == first + timedelta(minutes=5)
        assert s.last_task is not None
        await s.last_task
        rt._advance_clock(60)  # one minute into the five: nothing
        await nothing_more_happens()
        assert s.runs == 1
        rt._advance_clock(240)
        await until(lambda: s.runs == 2)
        await rt.shutdown(5)

    arun(main())


def test_cron_reads_the_expression_in_its_time_zone(runtime: MakeRuntime) -> None:
    rt = runtime()
    paris = offload.cron("30 9 * * *", print, runtime=rt, tz="Europe/Paris")
    assert paris.next_run is not None and paris.next_run.tzinfo == ZoneInfo("Europe/Paris")
    assert (paris.next_run.hour, paris.next_run.minute) == (9, 30)
    assert 0 < seconds_until(rt, paris.next_run) <= 25 * 3600
    east = timezone(timedelta(hours=5))
    fixed = offload.cron("0 0 * * *", print, runtime=rt, tz=east)
    assert fixed.next_run is not None and fixed.next_run.utcoffset() == timedelta(hours=5)
    assert fixed.next_run.astimezone(timezone.utc).hour == 19
    assert "Europe/Paris" in paris.trigger and "'30 9 * * *'" in paris.trigger
    rt.close(5)


class WallClock:
    """Stands in for a runtime's clocks in the pure cron arithmetic below."""

    def __init__(self, when: datetime) -> None:
        self.now = when.timestamp()

    def _wall_time(self) -> float:
        return self.now


def test_cron_across_daylight_saving_changes() -> None:
    paris = ZoneInfo("Europe/Paris")
    daily = _periodic._Cron("30 2 * * *", paris)
    clock = WallClock(datetime(2026, 3, 28, 12, tzinfo=paris))
    daily.first_delay(clock)  # type: ignore[arg-type]
    # 02:30 does not exist on 29 March 2026 (02:00 -> 03:00): the run is at 03:00
    assert daily.next == datetime(2026, 3, 29, 3, 0, tzinfo=paris)
    clock.now = datetime(2026, 10, 24, 12, tzinfo=paris).timestamp()
    daily.first_delay(clock)  # type: ignore[arg-type]
    seen = []
    for _ in range(3):  # 25 October 2026 has 02:30 twice: one run that day
        assert daily.next is not None
        seen.append(daily.next)
        clock.now = daily.next.timestamp() + 0.001
        daily.next_delay(clock)  # type: ignore[arg-type]
    assert [d.day for d in seen] == [25, 26, 27]
    assert [d.utcoffset() for d in seen] == [timedelta(hours=2), *[timedelta(hours=1)] * 2]


def test_cron_never_runs_the_same_time_twice_when_the_timer_is_early() -> None:
    minutely = _periodic._Cron("* * * * *", timezone.utc)
    clock = WallClock(datetime(2026, 1, 1, 12, 0, 30, tzinfo=timezone.utc))
    minutely.first_delay(clock)  # type: ignore[arg-type]
    assert minutely.next == datetime(2026, 1, 1, 12, 1, tzinfo=timezone.utc)
    # the timer fires with the wall clock a hair before 12:01 (the two clocks drift)
    clock.now = datetime(2026, 1, 1, 12, 0, 59, 500000, tzinfo=timezone.utc).timestamp()
    minutely.next_delay(clock)  # type: ignore[arg-type]
    assert minutely.next == datetime(2026, 1, 1, 12, 2, tzinfo=timezone.utc)
    clock.now += 3600  # a long stall: the missed minutes are not made up
    assert minutely.next_delay(clock) == pytest.approx(0.5)  # type: ignore[arg-type]
    assert minutely.next == datetime(2026, 1, 1, 13, 1, tzinfo=timezone.utc)


# --- overlap -----------------------------------------------------------------------------------


@pytest.mark.parametrize("overlap", ["skip", "queue", "allow"])
def test_a_run_still_going_when_the_next_is_due(
    overlap: str, runtime: MakeRuntime, arun: Arun
) -> None:
    calls = Calls()

    async def main() -> None:
        rt = runtime()
        s = offload.every(P, calls.blocking_job, runtime=rt, overlap=overlap)  # type: ignore[arg-type]
        rt._advance_clock(P)
        await until(lambda: s.runs == 1 and calls.count == 1)
        first = s.last_task
        assert first is not None and first.state == "running"
        rt._advance_clock(P)  # due again while the first still runs
        if overlap == "skip":
            await until(lambda: s.skipped == 1)
        elif overlap == "queue":
            await until(lambda: s.queued)
        else:
            await until(lambda: s.runs == 2 and calls.count == 2)
            assert rt.stats()["threads"]["running"] == 2
        rt._advance_clock(P)  # and again
        if overlap == "allow":
            await until(lambda: s.runs == 3 and calls.count == 3)
            assert s.skipped == 0
        else:  # skip: skipped again; queue: one run is queued already, this one skips
            await until(lambda: s.skipped == (2 if overlap == "skip" else 1))
            assert s.runs == 1 and calls.count == 1
        calls.gate.set()
        await first
        if overlap == "queue":  # the queued run starts when the first ends
            await until(lambda: s.runs == 2 and calls.count == 2)
            assert not s.queued and s.last_task is not first
        await nothing_more_happens()
        expected_runs = {"skip": 1, "queue": 2, "allow": 3}[overlap]
        assert s.runs == calls.count == expected_runs
        assert rt.stats()["threads"]["submitted"] == expected_runs  # the ordinary spawn path
        assert not await rt.drain(WAIT)
        await rt.shutdown(5)

    arun(main())


def test_a_queued_run_and_a_due_run_at_the_same_moment_start_one_run(
    runtime: MakeRuntime, arun: Arun
) -> None:
    """The run in progress ends while the next is already due: the queued run and the
    due one are the same run, not two."""
    calls = Calls()
    hold, held = threading.Event(), threading.Event()

    def busy_timer_thread() -> None:
        held.set()
        hold.wait(WAIT)

    async def main() -> None:
        rt = runtime()
        s = offload.every(P, calls.blocking_job, runtime=rt, overlap="queue")
        rt._advance_clock(P)
        await until(lambda: calls.count == 1)
        first = s.last_task
        assert first is not None
        rt._advance_clock(P)
        await until(lambda: s.queued)
        rt._call_later(0, busy_timer_thread)  # keep the timer thread busy a moment
        await until(held.is_set)
        rt._advance_clock(P)  # the next run is due, behind the busy callback
        calls.gate.set()  # the first run ends: its queued run's start is armed too
        await first
        await until(lambda: rt._timers_armed() == 2)
        hold.set()
        await until(lambda: s.runs >= 2)
        assert s.last_task is not None
        await s.last_task
        await nothing_more_happens()
        assert s.runs == calls.count == 2 and s.skipped == 0 and not s.queued
        await rt.shutdown(5)

    arun(main())


def test_a_full_lane_refuses_a_run_which_is_logged_and_the_schedule_goes_on(
    runtime: MakeRuntime, arun: Arun, offload_log: pytest.LogCaptureFixture
) -> None:
    calls = Calls()

    async def main() -> None:
        rt = runtime(lanes={"threads": {"max_running": 1, "max_pending": 0}})
        s = offload.every(P, calls.blocking_job, runtime=rt, overlap="allow", name="report")
        rt._advance_clock(P)
        await until(lambda: calls.count == 1)
        rt._advance_clock(P)
        await until(lambda: rt.stats()["threads"]["rejected"] == 1)
        assert s.runs == 1
        calls.gate.set()
        await until(lambda: rt.stats()["threads"]["running"] == 0)
        rt._advance_clock(P)
        await until(lambda: s.runs == 2)
        await rt.shutdown(5)

    arun(main())
    refused = [r for r in offload_log.records if "lane is full" in r.getMessage()]
    assert len(refused) == 1 and "'report'" in refused[0].getMessage()
    assert refused[0].levelno == logging.WARNING


def test_a_run_waiting_for_room_on_a_blocking_lane_never_stalls_the_timer(
    runtime: MakeRuntime, arun: Arun
) -> None:
    """on_full="block": the run waits for room like any blocked spawn, but the engine's
    one timer thread must not wait with it (every other timer of the runtime would)."""
    calls, other = Calls(), Calls()

    async def main() -> None:
        rt = runtime(lanes={"threads": {"max_running": 1, "max_pending": 0, "on_full": "block"}})
        s = offload.every(P, calls.blocking_job, runtime=rt, overlap="allow")
        beat = offload.every(P, other.async_job, runtime=rt, overlap="allow")
        rt._advance_clock(P)
        await until(lambda: calls.count == 1 and beat.runs == 1)
        rt._advance_clock(P)  # the second run waits for room
        await until(lambda: s.runs == 2 and beat.runs == 2)
        assert calls.count == 1
        rt._advance_clock(P)  # the timer thread still serves the other schedule
        await until(lambda: beat.runs == 3 and other.count == 3)
        calls.gate.set()
        await until(lambda: calls.count >= 2)
        await rt.shutdown(5)

    arun(main())


def test_a_failing_run_is_reported_and_the_next_one_still_runs(
    runtime: MakeRuntime, arun: Arun, offload_log: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        rt = runtime()
        s = offload.every(P, int, "not a number", runtime=rt, name="parse")
        for n in (1, 2):
            rt._advance_clock(P)
            await until(lambda n=n: s.runs == n and s.last_task is not None)
            assert s.last_task is not None
            await until(s.last_task.done)
        assert rt.stats()["threads"]["failed"] == 2
        await rt.shutdown(5)

    arun(main())
    failures = [r for r in offload_log.records if "failed" in r.getMessage()]
    assert len(failures) == 2 and all("'parse'" in r.getMessage() for r in failures)


# --- cancel and shutdown -------------------------------------------------------------------------


def test_cancel_stops_future_runs(runtime: MakeRuntime, arun: Arun) -> None:
    calls = Calls()

    async def main() -> None:
        rt = runtime()
        s = offload.every(P, calls.job, runtime=rt)
        rt._advance_clock(P)
        await until(lambda: s.runs == 1 and calls.count == 1)
        assert s.cancel() is True
        assert s.cancel() is False
        assert s.cancelled and s.next_run is None and rt.schedules() == []
        rt._advance_clock(10 * P)
        await nothing_more_happens()
        assert s.runs == calls.count == 1
        await rt.shutdown(5)

    arun(main())


def test_cancel_drops_a_queued_run(runtime: MakeRuntime, arun: Arun) -> None:
    calls = Calls()

    async def main() -> None:
        rt = runtime()
        s = offload.every(P, calls.blocking_job, runtime=rt, overlap="queue")
        rt._advance_clock(P)
        await until(lambda: calls.count == 1)
        rt._advance_clock(P)
        await until(lambda: s.queued)
        s.cancel()
        assert not s.queued
        calls.gate.set()
        assert s.last_task is not None
        await s.last_task
        await nothing_more_happens()
        assert s.runs == calls.count == 1
        await rt.shutdown(5)

    arun(main())


def test_shutdown_stops_every_schedule_and_leaves_nothing_behind(
    runtime: MakeRuntime, arun: Arun
) -> None:
    """The test guards (tests/conftest.py) check that no thread, timer thread included,
    and no task outlives the runtime."""
    calls = Calls()

    async def main() -> None:
        rt = runtime()
        every = offload.every(P, calls.blocking_job, runtime=rt, overlap="queue")
        cron = offload.cron("* * * * *", calls.job, runtime=rt)
        rt._advance_clock(P)
        await until(lambda: every.runs == 1)
        rt._advance_clock(P)
        await until(lambda: every.queued)
        calls.gate.set()  # the first run ends during shutdown's drain
        assert await rt.shutdown(5) == set()
        assert rt.schedules() == []
        assert every.cancelled and cron.cancelled and every.next_run is None
        with pytest.raises(offload.Closed, match="create a new offload.Runtime"):
            offload.every(P, calls.job, runtime=rt)
        rt._advance_clock(10 * P)
        await nothing_more_happens()
        assert every.runs == 1  # the queued run was dropped with the schedule

    arun(main())


def test_close_from_sync_code_stops_the_schedules(runtime: MakeRuntime) -> None:
    rt = runtime()
    s = offload.every(0.01, print, runtime=rt)
    rt.close(5)
    assert s.cancelled and rt.schedules() == []


def test_two_runtimes_keep_their_schedules_apart(runtime: MakeRuntime, arun: Arun) -> None:
    calls_a, calls_b = Calls(), Calls()

    async def main() -> None:
        a, b = runtime(), runtime()
        sa = offload.every(P, calls_a.job, runtime=a, name="same")
        sb = offload.every(P, calls_b.job, runtime=b, name="same")
        assert a.schedules() == [sa] and b.schedules() == [sb]
        a._advance_clock(P)
        await until(lambda: sa.runs == 1)
        await nothing_more_happens()
        assert sb.runs == 0
        await a.shutdown(5)
        assert sa.cancelled and not sb.cancelled
        b._advance_clock(P)
        await until(lambda: sb.runs == 1 and calls_b.count == 1)
        assert calls_a.count == 1
        await b.shutdown(5)

    arun(main())


# --- @offload.periodic ---------------------------------------------------------------------------


def test_periodic_starts_with_the_fastapi_lifespan_and_stops_with_it(
    runtime: MakeRuntime, arun: Arun
) -> None:
    from fastapi import FastAPI

    import offload.fastapi

    calls = Calls()
    rt = runtime()

    @offload.periodic(every=P, runtime=rt, name="tick")
    def tick() -> None:
        calls.job()

    assert tick.__name__ == "tick"  # the function itself, still callable
    assert rt.schedules() == []  # not before the runtime starts
    app = FastAPI(lifespan=offload.fastapi.lifespan(runtime=rt))

    async def main() -> None:
        async with app.router.lifespan_context(app):
            [s] = rt.schedules()
            assert s.name == "tick"
            rt._advance_clock(P)
            await until(lambda: s.runs == 1)
        assert rt.closed and rt.schedules() == [] and s.cancelled

    arun(main())
    assert calls.count == 1


def test_periodic_starts_with_async_with_runtime_and_at_once_once_started(
    runtime: MakeRuntime, arun: Arun
) -> None:
    calls = Calls()
    rt = runtime()

    @offload.periodic(cron="*/10 * * * *", runtime=rt, overlap="allow")
    async def report() -> None:
        await calls.async_job()

    async def main() -> None:
        async with rt:
            [s] = rt.schedules()
            assert s.overlap == "allow" and s.next_run is not None
            assert s.next_run.minute % 10 == 0
            rt.start()  # starting again starts nothing twice
            assert rt.schedules() == [s]

            @offload.periodic(every=5, runtime=rt)
            def late() -> None:
                calls.job()

            assert [x.name for x in rt.schedules()] == [s.name, late.__qualname__]
            advance_past(rt, s.next_run)
            await until(lambda: s.runs == 1 and calls.count >= 2)
        assert rt.schedules() == []

    arun(main())


def test_periodic_without_a_runtime_follows_the_default_runtime_across_renewals(
    arun: Arun,
) -> None:
    calls = Calls()
    first = offload.Runtime()
    previous = offload._replace_default_runtime(first)
    try:

        @offload.periodic(every=P)
        def refresh() -> None:
            calls.job()

        async def one_app_start() -> None:
            rt = offload.default_runtime()
            if rt.closed:
                rt = offload._renew_default_runtime()
            async with rt:
                [s] = rt.schedules()
                rt._advance_clock(P)
                await until(lambda: s.runs == 1)

        arun(one_app_start())
        assert first.closed and first.schedules() == []
        arun(one_app_start())  # a fresh default runtime: the schedule starts on it too
        assert offload.default_runtime() is not first
        assert calls.count == 2
    finally:
        _periodic._for_default_runtime.clear()
        renewed = offload._replace_default_runtime(previous)
        if not renewed.closed:
            renewed.close(5)


def test_schedule_repr_and_trigger(runtime: MakeRuntime) -> None:
    rt = runtime()
    s = offload.every(30, print, runtime=rt, jitter=2, name="beat")
    assert s.trigger == "every 30 s (+ up to 2 s)"
    assert "beat" in repr(s) and "every 30 s" in repr(s) and "next_run=" in repr(s)
    s.cancel()
    assert "cancelled" in repr(s)
    rt.close(5)


def test_as_dict_is_json_for_a_status_page(runtime: MakeRuntime, arun: Arun) -> None:
    async def main() -> None:
        rt = runtime()
        at_half_past_a_minute(rt)
        s = offload.cron("* * * * *", abs, -1, runtime=rt, name="minutely")
        first = s.next_run
        assert s.as_dict() == {
            "name": "minutely",
            "trigger": "cron '* * * * *' (UTC)",
            "overlap": "skip",
            "next_run": first.isoformat() if first is not None else None,
            "runs": 0,
            "skipped": 0,
            "queued": False,
            "cancelled": False,
            "last_task_id": None,
            "last_task_state": None,
        }
        advance_past(rt, first)
        await until(lambda: s.runs == 1)
        assert s.last_task is not None
        await s.last_task
        summary = json.loads(json.dumps(s.as_dict()))
        assert summary["runs"] == 1 and summary["last_task_id"] == s.last_task.id
        assert summary["last_task_state"] == "succeeded"
        await rt.shutdown(5)
        assert s.as_dict()["cancelled"] is True and s.as_dict()["next_run"] is None

    arun(main())


def test_a_schedule_target_whose_repr_raises_is_still_named(runtime: MakeRuntime) -> None:
    class Job:
        def __call__(self) -> None:
            pass

        def __repr__(self) -> str:
            raise RuntimeError("repr raised")

    rt = runtime()
    s = offload.every(P, Job(), runtime=rt)
    assert "Job" in s.name and "Job" in repr(s)
    rt.close(5)


FORK = """
import json, os, signal, time
import offload

def wait(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)

P = 3600.0
rt = offload.Runtime()
calls = []
parent_schedule = offload.every(P, calls.append, "parent", runtime=rt)
pid = os.fork()
if pid == 0:
    code = 1
    try:
        out = {"schedules": len(rt.schedules()), "cancelled": parent_schedule.cancelled}
        own = offload.every(P, calls.append, "child", runtime=rt)  # the child's timer works
        rt._advance_clock(P)
        wait(lambda: own.runs == 1)
        own.last_task.result(5)
        out["calls"] = calls
        out["parent_schedule_runs"] = parent_schedule.runs
        out["left"] = len(rt.close(5))
        print(json.dumps(out), flush=True)
        code = 0
    finally:
        os._exit(code)
deadline = time.monotonic() + 20
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    if time.monotonic() > deadline:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        status = -1
        break
    time.sleep(0.005)
rt._advance_clock(P)
wait(lambda: parent_schedule.runs == 1)
parent_schedule.last_task.result(5)
print(json.dumps({"status": status, "calls": calls, "left": len(rt.close(5))}), flush=True)
"""


# fork() of a process whose threads may hold AddressSanitizer's allocator locks: under
# ASan the child's new timer thread could hang in the sanitizer's runtime (CI's ASan run
# timed out in the child once). It runs in `make test` and on every CPython of the matrix.
@pytest.mark.no_asan
def test_a_forked_child_runs_none_of_its_parents_schedules() -> None:
    out = run_python(FORK)
    assert out.returncode == 0, out.stderr
    child, parent = (json.loads(line) for line in out.stdout.splitlines())
    assert child == {
        "schedules": 0,
        "cancelled": True,
        "calls": ["child"],
        "parent_schedule_runs": 0,
        "left": 0,
    }
    assert parent == {"status": 0, "calls": ["parent"], "left": 0}
