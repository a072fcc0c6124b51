"""spawn / run: where each kind of target goes, from every kind of caller, and the lane
objects with their per-call options."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import offload

from .conftest import Arun, MakeRuntime
from .support import WAIT, Gate, async_wait_until, counters, lane_names_of


def where(*args: Any, **kwargs: Any) -> tuple[int, tuple[Any, ...], dict[str, Any]]:
    """A sync target: reports its thread and what it was called with."""
    return threading.get_ident(), args, kwargs


async def awhere(*args: Any, **kwargs: Any) -> tuple[int, Any, tuple[Any, ...], dict[str, Any]]:
    """An async target: reports its thread, its loop and what it was called with."""
    await asyncio.sleep(0)
    return threading.get_ident(), asyncio.get_running_loop(), args, kwargs


def test_spawn_from_an_async_handler_routes_by_target_kind(
    arun: Arun, runtime: MakeRuntime
) -> None:
    """Sync callables go to the pool; coroutines and async functions to the caller's loop."""

    async def handler() -> None:
        rt = runtime()
        me, loop = threading.get_ident(), asyncio.get_running_loop()
        sync = rt.spawn(where, 1, k=2)
        coro = rt.spawn(awhere(3))
        afn = rt.spawn(awhere, 4, k=5)
        assert (sync.lane, coro.lane, afn.lane) == ("threads", "loop", "loop")
        thread, args, kwargs = await sync
        assert thread != me and (args, kwargs) == ((1,), {"k": 2})
        assert await coro == (me, loop, (3,), {})
        assert await afn == (me, loop, (4,), {"k": 5})
        assert not await rt.shutdown(WAIT)

    arun(handler())


def test_spawn_from_a_sync_function_in_a_thread_reaches_the_home_loop(
    arun: Arun, runtime: MakeRuntime
) -> None:
    """A sync handler in a worker thread (FastAPI's threadpool) sends coroutines to the home
    loop and sync callables to the pool."""

    def sync_handler(rt: offload.Runtime) -> tuple[offload.Task[Any], offload.Task[Any]]:
        return rt.spawn(awhere, "c"), rt.spawn(where, "s")

    async def main() -> None:
        async with runtime() as rt:
            me, loop = threading.get_ident(), asyncio.get_running_loop()
            coro, sync = await asyncio.to_thread(sync_handler, rt)
            assert (coro.lane, sync.lane) == ("loop", "threads")
            assert await coro == (me, loop, ("c",), {})
            assert (await sync)[0] != me

    arun(main())


@pytest.mark.parametrize("caller", ["plain thread", "no loop"])
def test_spawn_without_a_loop_or_home_loop_uses_background_and_pool(
    loop_kind: str, runtime: MakeRuntime, caller: str
) -> None:
    """From a plain thread or code with no loop: coroutines run on a background loop thread."""
    rt = runtime()
    out: dict[str, Any] = {}

    def spawn_both() -> None:
        out["coro"] = rt.spawn(awhere, "c")
        out["sync"] = rt.spawn(where, "s")
        out["caller"] = threading.get_ident()

    if caller == "plain thread":
        thread = threading.Thread(target=spawn_both)
        thread.start()
        thread.join(WAIT)
    else:
        spawn_both()
    coro, sync = out["coro"], out["sync"]
    assert (coro.lane, sync.lane) == ("background", "threads")
    thread_id, loop, args, _ = coro.result(WAIT)
    assert args == ("c",) and thread_id != out["caller"]
    assert loop in rt.background_loops()
    assert sync.result(WAIT)[0] not in (out["caller"], thread_id)
    assert not rt.close(WAIT)


def test_run_is_a_drop_in_for_asyncio_to_thread(arun: Arun, runtime: MakeRuntime) -> None:
    """`await run(f, *args, **kwargs)` returns and raises exactly what asyncio.to_thread does."""

    def divide(a: int, b: int = 1) -> float:
        return a / b

    async def main() -> None:
        async with runtime() as rt:
            me = threading.get_ident()
            assert await rt.run(divide, 6, b=3) == await asyncio.to_thread(divide, 6, b=3)
            with pytest.raises(ZeroDivisionError):
                await rt.run(divide, 1, b=0)
            thread, args, kwargs = await rt.run(where, 1, x=2)
            assert thread != me and (args, kwargs) == ((1,), {"x": 2})
            assert (await rt.run(awhere, 7))[2] == (7,)
            assert (await rt.run(awhere(8)))[2] == (8,)

    arun(main())


def test_cancelling_the_await_of_run_means_a_pending_task_never_starts(
    arun: Arun, runtime: MakeRuntime
) -> None:
    """run() waiting for a slot: cancelling its await cancels it and it never runs."""

    async def main() -> None:
        async with runtime(threads=1) as rt:
            gate, ran = Gate(), []
            blocker = rt.threads.spawn(gate.wait)
            task = rt.threads.run(ran.append, "ran")
            waiter = asyncio.ensure_future(_await(task))
            assert await async_wait_until(
                lambda: task.state == "pending" and task.lane == "threads"
            )
            await asyncio.sleep(0.01)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert task.state == "cancelled"
            gate.open()
            assert await blocker
            assert not await rt.drain(WAIT)
            assert ran == [] and task.cancelled()
            assert rt.threads.stats()["cancelled"] == 1

    arun(main())


@pytest.mark.parametrize("lane", ["loop", "background"])
def test_cancelling_the_await_of_run_cancels_a_running_coroutine(
    arun: Arun, runtime: MakeRuntime, lane: str
) -> None:
    """run() of a running coroutine: cancelling the await throws CancelledError into it."""

    async def main() -> None:
        async with runtime() as rt:
            seen: list[str] = []
            started = Gate()

            async def sleeper() -> None:
                started.open()
                try:
                    await asyncio.sleep(60)
                except asyncio.CancelledError:
                    seen.append("CancelledError")
                    raise

            task = lane_names_of(rt)[lane].run(sleeper)
            waiter = asyncio.ensure_future(_await(task))
            assert await started.async_wait()
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert not await rt.drain(WAIT)
            assert task.state == "cancelled" and seen == ["CancelledError"]

    arun(main())


def test_cancelling_the_await_of_a_running_sync_call_lets_it_finish(
    arun: Arun, runtime: MakeRuntime
) -> None:
    """A running sync callable can't be interrupted: the await ends, the task completes."""

    async def main() -> None:
        async with runtime() as rt:
            gate, started = Gate(), Gate()

            def work() -> str:
                started.open()
                gate.wait()
                return "done"

            task = rt.threads.run(work)
            waiter = asyncio.ensure_future(_await(task))
            assert await started.async_wait()
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            gate.open()
            assert not await rt.drain(WAIT)
            assert task.state == "succeeded" and task.result() == "done"

    arun(main())


async def _await(task: offload.Task[Any]) -> Any:
    return await task


def test_every_lane_has_spawn_run_stats_and_options(arun: Arun, runtime: MakeRuntime) -> None:
    """rt.loop, rt.background and rt.threads each spawn, run, count and take a name."""

    async def main() -> None:
        async with runtime() as rt:
            targets = {"loop": awhere, "background": awhere, "threads": where}
            for name, lane in lane_names_of(rt).items():
                assert isinstance(lane, offload.Lane) and lane.name == name
                spawned = lane.spawn(targets[name], 1)
                assert spawned.lane == name
                assert (await spawned)[-2:] == ((1,), {})
                assert (await lane.run(targets[name], 2))[-2:] == ((2,), {})
                named = lane.options(name=f"{name}-job")
                assert isinstance(named, offload.Lane) and named.name == name
                task = named.spawn(targets[name], 3)
                assert (task.name, task.lane) == (f"{name}-job", name)
                await task
                stats = counters(lane.stats())
                assert stats == counters(rt.stats()[name])
                assert stats["submitted"] == stats["succeeded"] == 3

    arun(main())


def test_per_call_options_never_collide_with_target_kwargs(
    arun: Arun, runtime: MakeRuntime
) -> None:
    """options(name=...) names the task; name=/lane= given to spawn go to the target."""

    async def main() -> None:
        async with runtime() as rt:
            task = rt.threads.options(name="x").spawn(where, name="kw")
            assert task.name == "x" and (await task)[2] == {"name": "kw"}
            task = rt.loop.options(name="y").spawn(awhere, name="kw", lane="kw2")
            assert task.name == "y" and (await task)[3] == {"name": "kw", "lane": "kw2"}
            task = rt.options(name="z", lane="background").spawn(awhere, name="kw")
            assert (task.name, task.lane) == ("z", "background")
            assert (await task)[3] == {"name": "kw"}
            result = await rt.threads.options(name="w").run(where, lane="threads", name="n")
            assert result[2] == {"lane": "threads", "name": "n"}

    arun(main())


class Greeter:
    def hello(self) -> str:
        return "hello"

    async def ahello(self) -> str:
        return "ahello"


def test_task_name_defaults_to_the_targets_qualified_name(
    loop_kind: str, runtime: MakeRuntime
) -> None:
    """Functions, methods, async functions and coroutine objects name their tasks."""
    rt = runtime()
    greeter = Greeter()
    coro = awhere()
    cases: list[tuple[Any, str]] = [
        (where, "where"),
        (greeter.hello, "Greeter.hello"),
        (awhere, "awhere"),
        (greeter.ahello, "Greeter.ahello"),
        (coro, "awhere"),
    ]
    for target, name in cases:
        task = rt.spawn(target)
        assert task.name == name, (target, task.name)
        task.result(WAIT)
        assert task.name == name
    assert rt.threads.options(name="custom").spawn(where).name == "custom"
    assert not rt.close(WAIT)


def test_spawn_returns_at_once_without_waiting_for_the_work(
    arun: Arun, runtime: MakeRuntime
) -> None:
    """spawn() never waits for the task: it hands back a pending or running Task."""

    async def main() -> None:
        async with runtime() as rt:
            gate = Gate()
            sync = rt.spawn(gate.wait)
            coro = rt.spawn(gate.async_wait)
            bg = rt.background.spawn(gate.async_wait)
            assert not any(t.done() for t in (sync, coro, bg))
            gate.open()
            assert [await t for t in (sync, coro, bg)] == [True, True, True]

    arun(main())


def test_a_runtime_has_the_module_level_api(runtime: MakeRuntime) -> None:
    """offload.Runtime offers what the module offers on the default runtime."""
    rt = runtime()
    for name in ("spawn", "run", "options", "stats", "drain", "shutdown"):
        assert callable(getattr(offload, name)) and callable(getattr(rt, name)), name
    for name in ("loop", "background", "threads"):
        assert isinstance(getattr(offload, name), offload.Lane)
        assert isinstance(getattr(rt, name), offload.Lane)
    assert isinstance(rt.options(name="x"), offload.Lane)


def test_run_works_with_asyncio_wait_for_and_gather(arun: Arun, runtime: MakeRuntime) -> None:
    """Tasks compose like to_thread's: gather collects results; a wait_for timeout
    cancels a run() that is still waiting for a slot or running as a coroutine."""

    async def main() -> None:
        async with runtime(threads=1) as rt:
            results = await asyncio.gather(
                rt.threads.run(pow, 2, 3),
                rt.background.run(asyncio.sleep, 0, "bg"),
                rt.loop.spawn(asyncio.sleep, 0, "loop"),
            )
            assert results == [8, "bg", "loop"]
            hold = Gate()
            blocker = rt.threads.spawn(hold.wait)
            waiting = rt.threads.run(int)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(waiting, 0.05)
            sleeping = rt.background.run(asyncio.sleep, 60)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(sleeping, 0.05)
            hold.open()
            assert await blocker is True
            assert not await rt.drain(WAIT)
            assert waiting.cancelled() and sleeping.cancelled()

    arun(main())
