"""Issue 12's engine, reviewed: each test here showed a bug found by a hostile review
of the controls code (a timeout reported as a cancellation from outside, a batch lost
behind a killed worker, a record slot re-entered by a user __str__, run() with a key,
a due task waiting for its key shown as scheduled, a retry timer armed on a cancelled
task, OverflowError for huge values), failed before its fix, and passes now.

No timed assertions: bounds are generous "does not hang" ones (WAIT).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

import pytest

import offload

from .conftest import Arun, MakeRuntime
from .support import WAIT, Gate, async_wait_until, run_python, wait_until


def _sleep_then(seconds: float, value: int) -> int:
    time.sleep(seconds)
    return value


def _messages(log: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in log.records]


# --- loop lanes: a timeout is reported as a cancellation "from outside offload" -------------


@pytest.mark.parametrize("retries", [0, 1])
def test_a_timed_out_loop_task_is_not_reported_as_cancelled_from_outside(
    arun: Arun, runtime: MakeRuntime, offload_log: pytest.LogCaptureFixture, retries: int
) -> None:
    rt = runtime()

    async def slow() -> None:
        await asyncio.sleep(3600)

    async def main() -> None:
        task = rt.loop.options(timeout=0.05, retries=retries, backoff=0).spawn(slow)
        await async_wait_until(task.done)
        assert isinstance(task.exception(), TimeoutError)
        assert task.attempt == retries + 1

    arun(main())
    assert not [m for m in _messages(offload_log) if "cancelled from outside offload" in m]


# --- processes lane: tasks batched behind a timed-out one are lost ------------------------


def test_a_task_batched_behind_a_timed_out_one_still_runs(runtime: MakeRuntime) -> None:
    rt = runtime(processes=1)
    # Both queued before the first worker is up: one batch [slow, fast] for the one worker.
    slow = rt.processes.options(timeout=1).spawn(_sleep_then, 3600, 1)
    fast = rt.processes.spawn(_sleep_then, 0, 7)
    try:
        with pytest.raises(TimeoutError):
            slow.result(timeout=60)
        assert fast.result(timeout=30) == 7
    finally:
        if not fast.done():  # lost (the bug): settle it, or it outlives the test
            fast._set_exception(asyncio.CancelledError())
        rt.close(5)


# --- lookup history: a record made while a user __str__ finishes another task ---------------


def test_a_failure_whose_str_finishes_another_task_does_not_crash() -> None:
    # In a child: the bug is a segfault.
    child = run_python(
        """
        import time, offload
        rt = offload.Runtime(keep_finished=1)
        other = rt.threads.options(delay=3600, name="other").spawn(time.sleep, 0)

        class Loud(Exception):
            def __str__(self):
                other.cancel()  # finishes another task from inside the failure's summary
                return "loud"

        def boom():
            raise Loud()

        task = rt.threads.options(name="boom").spawn(boom)
        try:
            task.result(timeout=10)
        except Loud:
            pass
        assert other.cancelled()
        [info] = rt.tasks()
        if info.id == other.id:
            assert (info.name, info.state, info.error) == ("other", "cancelled", None), info
        else:
            assert (info.id, info.name, info.state) == (task.id, "boom", "failed"), info
        rt.close(5)
        print("ok")
        """
    )
    assert (child.returncode, child.stdout.strip()) == (0, "ok"), child.stderr[-3000:]


# --- dedup keys through run() -----------------------------------------------------------


def test_run_with_a_key_is_singleflight_like_spawn(arun: Arun, runtime: MakeRuntime) -> None:
    rt = runtime()
    calls = 0

    async def refresh() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return calls

    async def main() -> None:
        view = rt.loop.options(key="user:42:refresh")
        results = await asyncio.gather(view.run(refresh), view.run(refresh))
        assert calls == 1, f"{calls} runs of one key"
        assert results == [1, 1]

    arun(main())


# --- per-key limits after a delay -----------------------------------------------------------


def test_a_delayed_task_past_due_waiting_for_its_limit_key_is_pending(
    runtime: MakeRuntime,
) -> None:
    rt = runtime()
    release = Gate()
    view = rt.threads.options(limit_key="tenant:7", limit=1)
    holder = view.spawn(release.wait)
    wait_until(lambda: holder.state == "running")
    later = rt.threads.options(limit_key="tenant:7", limit=1, delay=0.01).spawn(time.sleep, 0)
    try:
        wait_until(lambda: later.scheduled_for is None)  # its delay has passed
        time.sleep(0.05)
        info = rt.get(later.id)
        assert info is not None
        # Like a task spawned without delay that waits for its key:
        assert (later.state, rt.stats()["threads"]["scheduled"]) == ("pending", 0)
    finally:
        release.open()
        later.result(timeout=WAIT)
        holder.result(timeout=WAIT)


# --- a retry's timer armed after the task was cancelled -----------------------------------


def test_a_task_cancelled_while_its_retry_is_reported_leaves_no_timer(
    runtime: MakeRuntime, offload_log: pytest.LogCaptureFixture
) -> None:
    rt = runtime()
    holder: list[offload.Task[None]] = []

    class CancelOnRetrying(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "will be retried" in record.getMessage() and holder:
                holder[0].cancel()  # what a request handler on another thread may do

    def fail() -> None:
        raise ConnectionError("down")

    handler = CancelOnRetrying(logging.DEBUG)
    logging.getLogger("offload").addHandler(handler)
    try:
        task = rt.threads.options(retries=3, backoff=3600).spawn(fail)
        holder.append(task)
        wait_until(task.done)
        assert task.cancelled()
        assert rt._timers_armed() == 0, "a cancelled task stays armed (and alive) for its backoff"
    finally:
        logging.getLogger("offload").removeHandler(handler)


# --- bad input: huge numbers ----------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"timeout": 10**400},
        {"delay": 10**400},
        {"backoff": 10**400},
        {"retries": 10**30},
        {"limit_key": "a", "limit": 10**30},
    ],
    ids=["timeout", "delay", "backoff", "retries", "limit"],
)
def test_huge_numbers_are_a_value_error_saying_what_to_pass(
    runtime: MakeRuntime, options: dict[str, object]
) -> None:
    rt = runtime()
    with pytest.raises((ValueError, TypeError)):
        rt.options(**options)


def _die() -> None:
    os._exit(3)


def test_a_task_batched_behind_one_that_kills_its_worker_still_runs(
    runtime: MakeRuntime,
) -> None:
    """The same requeue path when a worker dies on its own (it was lost the same way)."""
    rt = runtime(processes=1)
    dying = rt.processes.spawn(_die)
    fast = rt.processes.spawn(_sleep_then, 0, 7)
    with pytest.raises(offload.ProcessDied):
        dying.result(timeout=60)
    assert fast.result(timeout=60) == 7
