"""A spawned task is never garbage-collected before it ends, even when nothing but the
engine references it (asyncio.create_task would lose such a task)."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import threading
import weakref
from typing import Any

import pytest

from .conftest import Arun, MakeRuntime
from .support import WAIT, Gate, async_wait_until, lane_names_of, wait_until


async def orphan(finished: list[str], refs: list[Any]) -> None:
    """Awaits a future referenced only by itself: a cycle the GC could reclaim."""
    future = asyncio.get_running_loop().create_future()
    refs.append((asyncio.get_running_loop(), weakref.ref(future)))
    await future
    finished.append("finished")


def resolve(refs: list[Any]) -> None:
    """Complete the orphan's future through a weak reference (from any thread)."""
    loop, ref = refs[0]
    future = ref()
    assert future is not None, "the orphaned task's future was garbage-collected"
    loop.call_soon_threadsafe(future.set_result, None)


@pytest.mark.parametrize("lane", ["loop", "background"])
def test_an_unreferenced_coroutine_survives_garbage_collection(
    arun: Arun, runtime: MakeRuntime, lane: str
) -> None:
    """Spawn, drop every reference, collect repeatedly: the coroutine still completes."""

    async def main() -> None:
        async with runtime() as rt:
            finished: list[str] = []
            refs: list[Any] = []
            lane_names_of(rt)[lane].spawn(orphan(finished, refs))
            assert await async_wait_until(lambda: bool(refs))
            for _ in range(3):
                gc.collect()
                await asyncio.sleep(0)
            resolve(refs)
            assert await async_wait_until(lambda: finished == ["finished"])
            assert not await rt.drain(WAIT)

    arun(main())


def test_an_unreferenced_sync_task_and_its_arguments_survive(runtime: MakeRuntime) -> None:
    """A pending sync task whose only reference is the engine keeps its arguments alive
    and runs once a slot frees."""
    rt = runtime(threads=1)
    hold, seen = Gate(), []

    class Payload:
        pass

    payload = Payload()
    alive = weakref.ref(payload)
    rt.threads.spawn(hold.wait)
    rt.threads.spawn(lambda p: seen.append(type(p).__name__), payload)
    del payload
    for _ in range(3):
        gc.collect()
    assert alive() is not None
    hold.open()
    assert rt.close(WAIT) == set()
    assert seen == ["Payload"]
    gc.collect()
    assert alive() is None  # released once the task ended


def test_an_unreferenced_task_in_a_thread_without_a_loop_survives(
    loop_kind: str, runtime: MakeRuntime
) -> None:
    """Spawned from a plain thread that then ends: the coroutine still completes."""
    rt = runtime()
    finished: list[str] = []
    refs: list[Any] = []
    thread = threading.Thread(target=lambda: rt.spawn(orphan(finished, refs)) and None)
    thread.start()
    thread.join(WAIT)
    assert wait_until(lambda: bool(refs))
    for _ in range(3):
        gc.collect()
    resolve(refs)
    assert wait_until(lambda: finished == ["finished"])


class Node:
    """Something to build a reference cycle with, and to watch through a weakref."""

    def __init__(self) -> None:
        self.task: Any = None


holder: contextvars.ContextVar[Node] = contextvars.ContextVar("holder")


async def leave_a_cycle(out: list[weakref.ref[Node]]) -> None:
    """asyncio.Task -> its context -> Node -> asyncio.Task: garbage once the task ends."""
    node = Node()
    node.task = asyncio.current_task()
    holder.set(node)
    out.append(weakref.ref(node))
    await asyncio.sleep(0)


async def never_started() -> None:
    await asyncio.sleep(0)


@pytest.mark.parametrize("lane", ["loop", "background"])
def test_garbage_left_by_finished_tasks_is_collected(
    arun: Arun, runtime: MakeRuntime, lane: str
) -> None:
    """While a task runs its asyncio.Task and coroutine are kept from the collector; once it
    ends, cycles through them are collectable again (nothing leaks), also for tasks
    cancelled before their first step."""
    refs: list[weakref.ref[Node]] = []

    async def main() -> None:
        async with runtime() as rt:
            spawn = getattr(rt, lane).spawn
            tasks = [spawn(leave_a_cycle, refs) for _ in range(50)]
            cancelled = [spawn(never_started) for _ in range(50)]
            for task in cancelled:
                task.cancel()
            assert not await rt.drain(WAIT)
            assert all(t.state == "succeeded" for t in tasks)
            del tasks, cancelled

    arun(main())
    for _ in range(3):
        gc.collect()
    assert len(refs) == 50
    assert [r() for r in refs] == [None] * 50
