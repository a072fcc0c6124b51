"""The C engine at its edges (issue 10, part A): each test reproduces one defect that
crashed, hung or lost a failure before its fix. Crashes and hangs run in a child
interpreter, so a segfault or a hang fails the test instead of killing or stalling
pytest; everything with a loop runs on asyncio and uvloop."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest

import offload

from .conftest import MakeRuntime
from .support import WAIT, async_wait_until, loop_factory, run_python, wait_until

# -- item 1: remove_done_callback while the task finishes --------------------------------


def test_remove_done_callback_while_an_eq_finishes_the_task() -> None:
    """A callback's __eq__ cancels the (pending) task: task_notify takes the callback
    list away and frees it while remove_done_callback was walking it (segfault)."""
    proc = run_python(
        """
        import threading, offload
        calls = []
        current = []

        class CancelsOnEq:
            def __call__(self, task):
                calls.append(task.id)
            def __eq__(self, other):
                current[0].cancel()
                return False
            __hash__ = None

        with offload.Runtime(threads=1) as rt:
            gate = threading.Event()
            rt.threads.spawn(gate.wait, 10)  # holds the only thread: the rest stay pending
            for _ in range(200):
                task = rt.threads.spawn(gate.wait, 0)
                current[:] = [task]
                for _ in range(4):
                    task.add_done_callback(CancelsOnEq())  # the list holds the only ref
                assert task.remove_done_callback(print) == 0
                assert task.cancelled()
            gate.set()
        assert len(calls) == 800, len(calls)
        print("OK")
        """,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "OK"


def test_remove_done_callback_still_removes_equal_callbacks(runtime: MakeRuntime) -> None:
    rt = runtime(threads=1)
    gate = threading.Event()
    task = rt.threads.spawn(gate.wait, WAIT)
    seen: list[str] = []

    def first(t: Any) -> None:
        seen.append("first")

    def second(t: Any) -> None:
        seen.append("second")

    task.add_done_callback(first)
    task.add_done_callback(second)
    task.add_done_callback(first)
    assert task.remove_done_callback(first) == 2
    assert task.remove_done_callback(first) == 0
    gate.set()
    assert task.result(WAIT) is True
    assert seen == ["second"]


# -- item 2: a Runtime subclass that never called super().__init__() ----------------------


def test_uninitialised_runtime_refuses_every_entry_point() -> None:
    """`bg_next++ % n_bg` with n_bg == 0 was a SIGFPE; now every entry point says what
    is wrong."""
    proc = run_python(
        """
        import asyncio, offload

        class Forgetful(offload.Runtime):
            def __init__(self, **options):
                self.extra = options  # no super().__init__()

        async def coro():
            pass

        rt = Forgetful()
        calls = {
            "background.spawn": lambda: rt.background.spawn(coro()),
            "loop.spawn": lambda: rt.loop.spawn(coro()),
            "threads.spawn": lambda: rt.threads.spawn(print),
            "processes.spawn": lambda: rt.processes.spawn(print),
            "spawn": lambda: rt.spawn(print),
            "run": lambda: rt.run(print),
            "threads.run": lambda: rt.threads.run(print),
            "options": lambda: rt.options(name="x"),
            "threads.options": lambda: rt.threads.options(name="x"),
            "stats": rt.stats,
            "threads.stats": rt.threads.stats,
            "background_loops": rt.background_loops,
            "started": lambda: rt.started,
            "closed": lambda: rt.closed,
            "home_loop": lambda: rt.home_loop,
            "configure": lambda: rt.configure(threads=2),
            "options_in_effect": lambda: rt.options_in_effect,
            "drain_sync": lambda: rt.drain_sync(1),
            "close": lambda: rt.close(1),
            "with": lambda: rt.__exit__(None, None, None),
            "start": lambda: asyncio.run(_start(rt)),
            "shutdown": lambda: asyncio.run(rt.shutdown(1)),
            "drain": lambda: asyncio.run(rt.drain(1)),
            "call": lambda: rt.call(coro),
            "_join": lambda: rt._join(1),
            "_live_tasks": rt._live_tasks,
        }

        async def _start(rt):
            rt.start()

        for name, call in calls.items():
            try:
                call()
            except RuntimeError as exc:
                assert "never initialised" in str(exc), (name, exc)
                assert "super().__init__" in str(exc), (name, exc)
            else:
                raise AssertionError(f"{name} did not refuse")
        assert rt.extra == {}
        print("OK")
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "OK"


# -- items 3 and 4: infinite and huge timeouts --------------------------------------------


@pytest.mark.parametrize("value", ["math.inf", "1e19", "sys.float_info.max"])
def test_huge_idle_timeout_does_not_freeze_the_pool(value: str) -> None:
    """The idle deadline had a negative tv_nsec: pthread_cond_timedwait failed with
    EINVAL at once and the idle worker spun holding the pool mutex."""
    proc = run_python(
        f"""
        import math, sys, time, offload
        with offload.Runtime(threads=2, idle_timeout={value}, shutdown_timeout=5) as rt:
            for i in range(50):
                assert rt.threads.spawn(time.sleep, 0).result(10) is None
                if i % 10 == 0:
                    time.sleep(0.02)  # let the workers go idle
            assert rt.stats()["threads"]["threads"]["alive"] >= 1
        print("OK")
        """,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "OK"


def test_infinite_shutdown_timeout_returns_and_blames_nothing() -> None:
    """Leaving `with Runtime(shutdown_timeout=inf)` never returned (the join deadline
    spun on bg_mu), and the log blamed loop_local closing for an OverflowError."""
    proc = run_python(
        """
        import asyncio, logging, math, time, offload
        logging.basicConfig(level=logging.WARNING)

        async def job():
            await asyncio.sleep(0)

        with offload.Runtime(shutdown_timeout=math.inf) as rt:
            rt.background.spawn(job).result(10)
            rt.threads.spawn(time.sleep, 0).result(10)
        print("with-returned")

        # the same at interpreter exit, through the default runtime
        offload.configure(shutdown_timeout=math.inf)
        offload.background.spawn(job).result(10)
        offload.threads.spawn(time.sleep, 0).result(10)
        print("OK")
        """,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["with-returned", "OK"]
    assert "timed out" not in proc.stderr, proc.stderr
    assert "OverflowError" not in proc.stderr, proc.stderr


def test_task_result_with_infinite_or_nan_timeout(runtime: MakeRuntime) -> None:
    rt = runtime()
    assert rt.threads.spawn(sum, [1, 2]).result(float("inf")) == 3
    task = rt.threads.spawn(sum, [1, 2])
    with pytest.raises(ValueError, match="nan"):
        task.result(float("nan"))
    assert task.result(WAIT) == 3


# -- item 7: a full loop lane made spawning O(N^2) -------------------------------------------


def _counting_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A loop of `kind` that counts is_closed() calls (the engine's probe for dead loops)."""
    probe = loop_factory(kind)()
    base = type(probe)
    probe.close()

    class Counting(base):  # type: ignore[misc, valid-type]
        probes = 0

        def is_closed(self) -> bool:
            Counting.probes += 1
            return bool(super().is_closed())

    return Counting()  # type: ignore[no-any-return]


def test_full_loop_lane_does_not_rescan_every_task_per_spawn(
    loop_kind: str, runtime: MakeRuntime
) -> None:
    """Once the lane was full every spawn probed every live task's loop: 2,000 spawns
    with max_running=4 made ~2,000,000 probes. Now about one per spawn."""
    rt = runtime(lanes={"loop": {"max_running": 4}})
    loop = _counting_loop(loop_kind)
    spawns = 2000

    async def main() -> int:
        gate = asyncio.Event()
        tasks = [rt.loop.spawn(gate.wait) for _ in range(spawns)]
        gate.set()
        for task in tasks:
            await task
        return sum(1 for t in tasks if t.state == "succeeded")

    try:
        assert loop.run_until_complete(asyncio.wait_for(main(), 60)) == spawns
    finally:
        loop.close()
    probes = type(loop).probes  # type: ignore[attr-defined]
    assert probes < 5 * spawns, probes


def test_full_loop_lane_still_reclaims_slots_of_a_closed_loop(
    loop_kind: str, runtime: MakeRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    rt = runtime(lanes={"loop": {"max_running": 2, "max_pending": 0}})
    dead = loop_factory(loop_kind)()

    async def fill() -> list[offload.Task[Any]]:
        return [rt.loop.spawn(asyncio.sleep, 3600) for _ in range(2)]

    stranded = dead.run_until_complete(fill())
    dead.run_until_complete(asyncio.sleep(0.01))  # both start, then the loop is left
    for task in asyncio.all_tasks(dead):
        task._log_destroy_pending = False  # type: ignore[attr-defined]
    dead.close()

    async def spawn_again() -> Any:
        return await rt.loop.spawn(asyncio.sleep, 0, "fresh")

    with caplog.at_level(logging.WARNING, logger="offload"):
        live = loop_factory(loop_kind)()
        try:
            assert live.run_until_complete(asyncio.wait_for(spawn_again(), 30)) == "fresh"
        finally:
            live.close()
    assert [t.state for t in stranded] == ["cancelled", "cancelled"]
    assert sum("cancelled from outside offload" in r.getMessage() for r in caplog.records) == 2


# -- item 10: a task awaited from a loop closed before it ended ---------------------------------


def test_failure_awaited_from_a_closed_loop_is_reported_once(
    loop_kind: str, runtime: MakeRuntime
) -> None:
    reported: list[BaseException] = []
    rt = runtime(error_handler=lambda task, exc: reported.append(exc))
    gate = threading.Event()

    def fail_later() -> None:
        gate.wait(WAIT)
        raise ValueError("nobody is awaiting me any more")

    task = rt.threads.spawn(fail_later)
    loop = loop_factory(loop_kind)()

    async def awaiter() -> None:
        await task

    waiting = loop.create_task(awaiter())
    loop.run_until_complete(asyncio.sleep(0.05))  # the await is parked on the task
    waiting._log_destroy_pending = False  # type: ignore[attr-defined]
    loop.close()  # closed under the await, which never resumes
    gate.set()
    assert wait_until(task.done)
    rt.close(5)
    assert [str(e) for e in reported] == ["nobody is awaiting me any more"]
    del waiting


# -- item 11: one eventfd and reader per Runtime on a long-lived loop ---------------------------


def test_runtimes_on_one_loop_give_their_fds_back(loop_kind: str) -> None:
    proc = run_python(
        f"""
        import asyncio, os, resource, time, offload, uvloop
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))

        def fds():
            return len(os.listdir("/proc/self/fd"))

        async def main():
            counts = []
            for i in range(150):
                async with offload.Runtime(threads=1) as rt:
                    await rt.loop.run(asyncio.sleep, 0)
                    await rt.threads.run(time.sleep, 0)
                    rt.background.spawn(asyncio.sleep, 0)
                if i in (10, 149):
                    await asyncio.sleep(0.2)  # background loop threads finish closing
                    counts.append(fds())
            return counts

        loop = {"uvloop.new_event_loop()" if loop_kind == "uvloop" else "asyncio.new_event_loop()"}
        first, last = loop.run_until_complete(main())
        assert last <= first + 8, (first, last)  # one per runtime was 139 more
        print("OK")
        """,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "OK"


def test_a_released_bridge_still_wakes_an_awaiter(loop_kind: str) -> None:
    """After the runtime closed (its fd given back), a task stuck in a thread at
    shutdown still wakes whoever awaits it, through call_soon_threadsafe."""
    gate = threading.Event()

    async def main() -> Any:
        rt = offload.Runtime(threads=1, loop_factory=loop_factory(loop_kind))
        rt.start()
        task = rt.threads.spawn(lambda: gate.wait(WAIT) and "late")
        await asyncio.sleep(0.05)
        threading.Timer(0.2, gate.set).start()
        await rt.shutdown(0.05)  # the task is stuck in user code: reported, not waited for
        return await asyncio.wait_for(task, WAIT)

    loop = loop_factory(loop_kind)()
    try:
        assert loop.run_until_complete(main()) == "late"
    finally:
        loop.close()


# -- item 12: reporting never depends on user __repr__ / __str__ -----------------------------


class EvilStr(str):
    def __repr__(self) -> str:
        raise RuntimeError("repr of the name raised")

    def __str__(self) -> str:
        raise RuntimeError("str of the name raised")


class EvilQualname:
    def __init__(self) -> None:
        self.__qualname__ = EvilStr("evil")

    def __call__(self) -> None:
        raise ValueError("the real failure")

    def __repr__(self) -> str:
        raise RuntimeError("repr of the target raised")


def _fail() -> None:
    raise ValueError("the real failure")


@pytest.mark.parametrize("how", ["name", "qualname"])
def test_failure_is_reported_when_names_and_reprs_raise(
    how: str, runtime: MakeRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    rt = runtime()
    with caplog.at_level(logging.ERROR, logger="offload"):
        if how == "name":
            task = rt.threads.options(name=EvilStr("evil")).spawn(_fail)
        else:
            task = rt.threads.spawn(EvilQualname())
        assert wait_until(task.done)
        assert wait_until(lambda: any(r.exc_info for r in caplog.records))
    assert task.name == "evil" and type(task.name) is str
    assert "evil" in repr(task)
    [record] = [r for r in caplog.records if r.exc_info]
    assert "'evil'" in record.getMessage()
    assert record.exc_info is not None and str(record.exc_info[1]) == "the real failure"


# -- item 13: sub-interpreters are refused --------------------------------------------------


def test_import_in_a_subinterpreter_is_refused() -> None:
    proc = run_python(
        """
        try:
            import _interpreters as interpreters
        except ImportError:
            try:
                import _xxsubinterpreters as interpreters
            except ImportError:
                print("SKIP")
                raise SystemExit(0)
        iid = interpreters.create()
        try:
            outcome = interpreters.run_string(iid, "import offload")
        except Exception as exc:
            outcome = exc
        finally:
            interpreters.destroy(iid)
        print(type(outcome).__name__, outcome)
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    if proc.stdout.strip() == "SKIP":
        pytest.skip("no _interpreters/_xxsubinterpreters module in this Python")
    # ours on 3.10/3.11; on 3.12+ CPython refuses first, reading the module's slot
    said = proc.stdout
    assert "ImportError" in said, said
    assert "sub-interpreter" in said or "does not support loading in subinterpreters" in said


# -- item 15 (engine side): a target whose repr raises; a stopped home loop ------------------


class ReprRaises:
    def __call__(self) -> None:
        pass

    def __repr__(self) -> str:
        raise RuntimeError("repr raised")


class AsyncReprRaises:
    async def __call__(self) -> None:
        pass

    def __repr__(self) -> str:
        raise RuntimeError("repr raised")


def test_wrong_lane_error_names_the_target_even_if_its_repr_raises(
    runtime: MakeRuntime,
) -> None:
    rt = runtime()
    for lane in (rt.loop, rt.background):
        with pytest.raises(TypeError, match=r"runs coroutines, and <.*ReprRaises object at"):
            lane.spawn(ReprRaises())
    with pytest.raises(TypeError, match=r"runs sync callables, and <.*AsyncReprRaises object"):
        rt.threads.spawn(AsyncReprRaises())
    with pytest.raises(ValueError, match="lane must be"):
        rt.options(lane=ReprRaises())  # type: ignore[arg-type]


def test_spawn_to_a_stopped_home_loop_fails_fast(loop_kind: str, runtime: MakeRuntime) -> None:
    rt = runtime()
    home = loop_factory(loop_kind)()

    async def start() -> None:
        rt.start()

    home.run_until_complete(start())  # now stopped, but open
    outcome: list[BaseException | offload.Task[Any]] = []

    def from_thread() -> None:
        try:
            outcome.append(rt.loop.spawn(asyncio.sleep, 0))
        except RuntimeError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=from_thread)
    worker.start()
    worker.join(WAIT)
    try:
        [exc] = outcome
        assert isinstance(exc, RuntimeError), exc
        assert "stopped but not closed" in str(exc)
    finally:
        home.close()
    # closed: coroutines go to the background lane again
    task = rt.loop.spawn(asyncio.sleep, 0, "ran")
    assert task.lane == "background" and task.result(WAIT) == "ran"


def test_call_with_a_stopped_home_loop_does_not_block_forever() -> None:
    proc = run_python(
        """
        import asyncio, offload

        async def start():
            offload.default_runtime().start()

        async def work():
            return 42

        home = asyncio.new_event_loop()
        home.run_until_complete(start())
        try:
            offload.call(work)
        except RuntimeError as exc:
            print("refused:", "stopped but not closed" in str(exc))
        home.close()
        print(offload.call(work))
        """,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[0] == "refused: True", proc.stdout
    assert proc.stdout.strip().endswith("42")


# -- issue 15: a task cancelled between getting its slot and being dispatched ---------------


def test_a_task_cancelled_by_a_done_callback_before_its_dispatch_never_runs(
    arun: Any, runtime: MakeRuntime
) -> None:
    """A finishing task calls its done callbacks before it dispatches the task that
    inherited its slot. A callback cancelling that task leaves nothing to dispatch: it
    never runs, the lane goes on (it used to be dispatched without its loop: a crash)."""
    rt = runtime(lanes={"loop": {"max_running": 1}})
    ran: list[str] = []

    async def main() -> None:
        rt.start()
        gate = asyncio.Event()

        async def first() -> None:
            await gate.wait()

        async def second() -> None:
            ran.append("second")

        async def third() -> int:
            return 3

        a = rt.loop.spawn(first())
        b = rt.loop.spawn(second())
        assert b.state == "pending"
        a.add_done_callback(lambda _: b.cancel())
        gate.set()
        await a
        assert await async_wait_until(b.done)
        assert b.cancelled() and ran == []
        assert await rt.loop.run(third()) == 3
        stats = rt.loop.stats()
        assert (stats["succeeded"], stats["cancelled"], stats["running"]) == (2, 1, 0)

    arun(main())
