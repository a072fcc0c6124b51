"""offload.processes (issue 6, part 1): CPU-bound work in worker processes, with the
engine's bookkeeping, call-site pickling checks, and a killed worker failing only its task."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import proc_targets as targets
import pytest

import offload

WAIT = 60.0


@pytest.fixture
def rt() -> Any:
    runtime = offload.Runtime(processes=2)
    yield runtime
    runtime.close(10)


def test_spawn_and_result(rt: offload.Runtime) -> None:
    """A sync callable runs in another process; result() returns its value."""
    task = rt.processes.spawn(targets.add, 41)
    assert task.lane == "processes"
    assert task.name == "add"
    assert task.result(WAIT) == 42
    assert rt.processes.spawn(targets.pid).result(WAIT) != os.getpid()


def test_run_is_awaitable_on_both_loops(rt: offload.Runtime, run_loop: Callable[..., Any]) -> None:
    """`await processes.run(...)` works on asyncio and uvloop; kwargs reach the target."""

    async def main() -> list[int]:
        return list(
            await asyncio.gather(*(rt.processes.run(targets.add, i, y=10) for i in range(50)))
        )

    assert run_loop(main()) == [i + 10 for i in range(50)]


def test_many_small_tasks_are_all_accounted(rt: offload.Runtime) -> None:
    """Thousands of small tasks (sent in batches) each return their own result."""
    tasks = [rt.processes.spawn(targets.add, i) for i in range(3000)]
    assert [t.result(WAIT) for t in tasks] == [i + 1 for i in range(3000)]
    stats = rt.processes.stats()
    assert stats["submitted"] == 3000
    assert stats["succeeded"] == 3000
    assert stats["pending"] == stats["running"] == 0


def test_exception_crosses_with_the_remote_traceback(rt: offload.Runtime) -> None:
    """The worker's exception is raised in the caller, with its traceback attached as text."""
    task = rt.processes.spawn(targets.fail, "no good")
    exc = task.exception(WAIT)
    assert isinstance(exc, ValueError)
    assert str(exc) == "no good"
    assert "in fail" in str(exc.__cause__)
    assert rt.processes.stats()["failed"] == 1


def test_unpicklable_target_or_arguments_fail_at_the_call_site(rt: offload.Runtime) -> None:
    """Lambdas, local functions and unpicklable arguments are refused by spawn() itself."""
    with pytest.raises(TypeError, match=r"offload\.processes needs a picklable target"):
        rt.processes.spawn(lambda: 1)
    with pytest.raises(TypeError, match=r"picklable target and arguments"):
        rt.processes.spawn(targets.add, (x for x in range(3)))
    assert rt.processes.stats()["submitted"] == 0


def test_unpicklable_result_fails_the_task_clearly(rt: offload.Runtime) -> None:
    exc = rt.processes.spawn(targets.unpicklable_result).exception(WAIT)
    assert isinstance(exc, TypeError)
    assert "could not be pickled back" in str(exc)


def test_async_targets_are_refused(rt: offload.Runtime) -> None:
    async def coro_fn() -> None:
        pass

    with pytest.raises(TypeError, match=r"offload\.processes runs sync callables"):
        rt.processes.spawn(coro_fn)


def _wait_for_file(path: Path) -> int:
    deadline = time.monotonic() + WAIT
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.01)
    return int(path.read_text())


def test_a_killed_worker_fails_only_its_task(rt: offload.Runtime, tmp_path: Path) -> None:
    """kill -9 of the worker running a task: that task fails with ProcessDied saying so;
    tasks queued behind it and later tasks still run (no BrokenProcessPool)."""
    marker = tmp_path / "pid"
    victim = rt.processes.spawn(targets.announce_and_sleep, str(marker), 60)
    worker_pid = _wait_for_file(marker)
    queued = [rt.processes.spawn(targets.sleep_then, 0.01, i) for i in range(20)]
    os.kill(worker_pid, signal.SIGKILL)
    exc = victim.exception(WAIT)
    assert isinstance(exc, offload.ProcessDied)
    assert f"pid {worker_pid}" in str(exc)
    assert "SIGKILL" in str(exc)
    assert [t.result(WAIT) for t in queued] == list(range(20))
    later = [rt.processes.spawn(targets.pid) for _ in range(10)]
    pids = {t.result(WAIT) for t in later}
    assert worker_pid not in pids
    stats = rt.processes.stats()
    assert stats["failed"] == 1
    assert stats["succeeded"] == 30


def test_a_task_that_exits_its_worker(rt: offload.Runtime) -> None:
    """os._exit inside a task is a dead worker too: reported with its exit code."""
    exc = rt.processes.spawn(targets.exit_hard, 3).exception(WAIT)
    assert isinstance(exc, offload.ProcessDied)
    assert "exit code 3" in str(exc)
    assert rt.processes.spawn(targets.add, 1).result(WAIT) == 2


def test_killed_worker_under_uvloop_and_asyncio(
    rt: offload.Runtime, run_loop: Callable[..., Any], tmp_path: Path
) -> None:
    """The same through `await run()`: the awaiting coroutine gets ProcessDied."""
    marker = tmp_path / "pid"

    async def main() -> None:
        waiting = asyncio.ensure_future(
            rt.processes.run(targets.announce_and_sleep, str(marker), 60)
        )
        worker_pid = await asyncio.to_thread(_wait_for_file, marker)
        os.kill(worker_pid, signal.SIGKILL)
        with pytest.raises(offload.ProcessDied):
            await asyncio.wait_for(waiting, WAIT)
        assert await rt.processes.run(targets.add, 1) == 2

    run_loop(main())


def test_limits_and_backpressure_apply(tmp_path: Path) -> None:
    """max_running/max_pending/on_full hold for the processes lane like any other."""
    with offload.Runtime(
        processes=1, lanes={"processes": {"max_running": 1, "max_pending": 1}}
    ) as rt:
        marker = tmp_path / "pid"
        first = rt.processes.spawn(targets.announce_and_sleep, str(marker), 0.5)
        _wait_for_file(marker)
        second = rt.processes.spawn(targets.add, 1)
        with pytest.raises(offload.Full):
            rt.processes.spawn(targets.add, 2)
        assert second.state == "pending"
        assert first.result(WAIT) > 0
        assert second.result(WAIT) == 2
        assert rt.processes.stats()["rejected"] == 1


def test_pending_task_can_be_cancelled(tmp_path: Path) -> None:
    with offload.Runtime(processes=1, lanes={"processes": {"max_running": 1}}) as rt:
        marker = tmp_path / "pid"
        first = rt.processes.spawn(targets.announce_and_sleep, str(marker), 0.3)
        _wait_for_file(marker)
        second = rt.processes.spawn(targets.add, 1)
        assert second.cancel() is True
        assert first.result(WAIT) > 0
        assert second.cancelled()


def test_drain_waits_for_process_tasks(run_loop: Callable[..., Any]) -> None:
    rt = offload.Runtime(processes=2)

    async def main() -> None:
        tasks = [rt.processes.spawn(targets.sleep_then, 0.05, i) for i in range(6)]
        assert await rt.drain(WAIT) == set()
        assert all(t.state == "succeeded" for t in tasks)
        await rt.shutdown(5)

    run_loop(main())


def test_shutdown_kills_a_stuck_worker_and_names_the_task(caplog: pytest.LogCaptureFixture) -> None:
    """A task still running at shutdown is killed with its worker and reported by name."""
    rt = offload.Runtime(processes=1)
    task = rt.processes.options(name="endless-report").spawn(targets.sleep_then, 600, 1)
    deadline = time.monotonic() + WAIT
    while task.state != "running":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    start = time.monotonic()
    unfinished = rt.close(1.0)
    assert time.monotonic() - start < 10
    assert task in unfinished
    assert task.cancelled()
    assert "endless-report" in caplog.text


def test_cpu_bound_work_runs_in_parallel_processes(rt: offload.Runtime) -> None:
    """Two CPU-bound tasks run in two different worker processes."""
    tasks = [rt.processes.spawn(targets.sleep_then, 0.3, i) for i in range(2)]
    pids = {rt.processes.spawn(targets.pid).result(WAIT) for _ in range(2)}
    assert [t.result(WAIT) for t in tasks] == [0, 1]
    assert len(pids) >= 1
    assert rt.processes.spawn(targets.burn, 1000).result(WAIT) == sum(i * i for i in range(1000))


# Forking a threaded process is what this test is about (3.12+ warn on it).
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_fork_after_use_gives_the_child_a_working_lane(rt: offload.Runtime) -> None:
    """os.fork() after the lane started: the child runs process tasks (on fresh workers)."""
    assert rt.processes.spawn(targets.add, 1).result(WAIT) == 2
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child process)
        code = 1
        try:
            os.close(read_end)
            value = rt.processes.spawn(targets.add, 5).result(WAIT)
            os.write(write_end, str(value).encode())
            rt.close(5)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    deadline = time.monotonic() + WAIT
    while True:
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            os.kill(child, signal.SIGKILL)
            pytest.fail("the forked child hung")
        time.sleep(0.02)
    assert os.waitstatus_to_exitcode(status) == 0
    assert os.read(read_end, 100) == b"6"
    os.close(read_end)
    assert rt.processes.spawn(targets.add, 2).result(WAIT) == 3


def test_a_result_the_parent_cant_unpickle_fails_only_its_task(rt: offload.Runtime) -> None:
    """Issue 10 item 5: a result that pickles in the worker but can't be rebuilt in the
    parent (an exception class whose __init__ takes two arguments) fails its task with
    an error naming the type; the collector keeps serving every later task."""
    task = rt.processes.spawn(targets.return_two_arg_error)
    with pytest.raises(TypeError) as info:
        task.result(30)
    message = str(info.value)
    assert "TwoArgError" in message and "could not be unpickled" in message
    assert task.state == "failed"
    later = [rt.processes.spawn(targets.add, i) for i in range(20)]
    assert [t.result(30) for t in later] == [i + 1 for i in range(20)]


def test_an_unpicklable_exception_whose_str_raises_names_its_type(rt: offload.Runtime) -> None:
    """Issue 10 item 14: formatting the user's exception must never kill the worker;
    the caller gets a failure naming the real exception type, not ProcessDied."""
    task = rt.processes.spawn(targets.raise_unpicklable_str_raises)
    with pytest.raises(Exception) as info:
        task.result(30)
    assert not isinstance(info.value, offload.ProcessDied), info.value
    assert "UnpicklableStrRaises" in str(info.value)
    assert "not picklable" in str(info.value)
    assert rt.processes.spawn(targets.add, 1).result(30) == 2


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_a_closed_pool_leaves_no_fds_behind() -> None:
    """Found by the property test (issue 10): each runtime that used the lane kept its
    wakeup pipe and each exited worker's sentinel open (while the runtime was referenced),
    and a worker started while stop() ran was never stopped. A closed runtime still
    referenced must hold no fd of its pool."""
    warm = offload.Runtime(processes=1)
    warm.processes.spawn(targets.add, 1).result(WAIT)
    warm.close(10)
    before = _open_fds()
    kept = []
    for timeout in (10, 0):  # 0: workers killed at once, maybe while one starts
        rt = offload.Runtime(processes=2)
        assert rt.processes.spawn(targets.add, 1).result(WAIT) == 2
        rt.close(timeout)
        kept.append(rt)
    deadline = time.monotonic() + WAIT
    while _open_fds() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _open_fds() <= before, sorted(os.listdir("/proc/self/fd"))
