"""contextvars: the caller's context is copied into the task on every lane, at spawn
time; what the task changes never leaks back or into other tasks."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any

import pytest

import offload

from .conftest import Arun, MakeRuntime
from .support import WAIT, Gate, lane_names_of

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


def read_and_change_sync() -> str:
    seen = request_id.get()
    request_id.set("changed inside")
    return seen


async def read_and_change_async() -> str:
    seen = request_id.get()
    request_id.set("changed inside")
    await asyncio.sleep(0)
    return seen


def reader(lane: str) -> Any:
    return read_and_change_sync if lane == "threads" else read_and_change_async


@pytest.mark.parametrize("call", ["spawn", "run"])
def test_the_callers_context_is_copied_into_every_lane(
    arun: Arun, runtime: MakeRuntime, call: str
) -> None:
    """A ContextVar set by the caller is visible inside the task; the task's own change
    stays inside."""

    async def main() -> None:
        async with runtime() as rt:
            request_id.set("req-1")
            for name, lane in lane_names_of(rt).items():
                if call == "spawn":
                    seen = await lane.spawn(reader(name))
                else:
                    seen = await lane.run(reader(name))
                assert seen == "req-1", name
                assert request_id.get() == "req-1", name

    arun(main())


def test_a_threads_context_travels_to_the_home_loop(arun: Arun, runtime: MakeRuntime) -> None:
    """A sync handler in a worker thread spawning a coroutine onto the home loop: the
    coroutine sees the handler's context, not the loop's."""

    def sync_handler(rt: offload.Runtime) -> offload.Task[Any]:
        request_id.set("from-thread")
        return rt.loop.spawn(read_and_change_async)

    async def main() -> None:
        async with runtime() as rt:
            request_id.set("loop's own")
            task = await asyncio.to_thread(contextvars.copy_context().run, sync_handler, rt)
            assert task.lane == "loop"
            assert await task == "from-thread"
            assert request_id.get() == "loop's own"

    arun(main())


def test_the_context_is_captured_at_spawn_time(loop_kind: str, runtime: MakeRuntime) -> None:
    """A task that starts later still sees the values of the moment it was spawned."""
    rt = runtime(max_running=1)
    hold = Gate()
    blockers = [rt.threads.spawn(hold.wait), rt.background.spawn(hold.async_wait)]

    def run_in_fresh_context() -> list[offload.Task[Any]]:
        request_id.set("at spawn")
        tasks = [rt.threads.spawn(reader("threads")), rt.background.spawn(reader("background"))]
        request_id.set("after spawn")
        return tasks

    tasks = contextvars.copy_context().run(run_in_fresh_context)
    assert [t.state for t in tasks] == ["pending", "pending"]
    hold.open()
    for task in blockers:
        task.result(WAIT)
    assert [t.result(WAIT) for t in tasks] == ["at spawn", "at spawn"]


@pytest.mark.parametrize("lane", ["threads", "background"])
def test_tasks_never_see_each_others_changes(
    loop_kind: str, runtime: MakeRuntime, lane: str
) -> None:
    """Consecutive tasks on the same worker thread or loop each start from their caller's
    context, not from what the previous task set."""
    rt = runtime(threads=1)
    spawn = lane_names_of(rt)[lane].spawn
    first = spawn(reader(lane))
    assert first.result(WAIT) == "unset"
    assert spawn(reader(lane)).result(WAIT) == "unset"
    assert request_id.get() == "unset"


def test_contexts_of_concurrent_spawners_stay_apart(runtime: MakeRuntime) -> None:
    """Eight threads, each with its own value, spawning at once: each task sees its
    spawner's value."""
    rt = runtime()
    results: dict[int, list[str]] = {}

    def spawner(i: int) -> None:
        request_id.set(f"thread-{i}")
        tasks = [rt.threads.spawn(read_and_change_sync) for _ in range(50)]
        results[i] = [t.result(WAIT) for t in tasks]

    threads = [threading.Thread(target=spawner, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert results == {i: [f"thread-{i}"] * 50 for i in range(8)}
