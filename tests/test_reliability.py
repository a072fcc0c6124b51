"""Reliability: a randomized model test of admission/cancel/shutdown, a small soak,
and fault injection. Also run under ThreadSanitizer by `make test-sanitize`."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from typing import Any

import pytest

import offload

TERMINAL = {"succeeded", "failed", "cancelled"}


def accounted(stats: dict[str, Any]) -> int:
    return sum(stats[k] for k in ("succeeded", "failed", "cancelled", "dropped", "rejected"))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_model_of_concurrent_spawn_cancel_close(seed: int) -> None:
    """Random spawns (ok / failing / slow), cancels and a close from 6 threads,
    checked against a model: every attempt is accounted for exactly once and
    every task's final state agrees with what happened to it."""
    policy = ["reject", "drop", "block"][seed % 3]
    rt = offload.Runtime(
        threads=3, lanes={"threads": {"max_running": 2, "max_pending": 16, "on_full": policy}}
    )
    rng = random.Random(seed)
    outcomes: list[tuple[str, offload.Task[Any]]] = []
    refused = Counter[str]()
    lock = threading.Lock()
    go = threading.Event()

    def ok() -> int:
        return 1

    def boom() -> None:
        raise ValueError("planned")

    def producer(index: int) -> None:
        local = random.Random(seed * 100 + index)
        go.wait()
        for _ in range(400):
            kind = local.choice(["ok", "ok", "fail", "slow"])
            target: Any = {"ok": ok, "fail": boom, "slow": lambda: time.sleep(0.0005)}[kind]
            try:
                task = rt.threads.spawn(target)
            except offload.Full:
                with lock:
                    refused["full"] += 1
                continue
            except offload.Closed:
                with lock:
                    refused["closed"] += 1
                continue
            with lock:
                outcomes.append((kind, task))
            if local.random() < 0.15:
                task.cancel()

    threads = [threading.Thread(target=producer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    go.set()
    time.sleep(rng.uniform(0.0, 0.05))
    for t in threads:
        t.join(timeout=60)
    rt.close(timeout=30)

    stats = rt.stats()["threads"]
    assert stats["pending"] == 0 and stats["running"] == 0
    assert stats["submitted"] == accounted(stats)
    assert stats["submitted"] == len(outcomes) + refused["full"] + refused["closed"]
    for kind, task in outcomes:
        assert task.done(), task
        if task.state == "succeeded":
            assert kind in ("ok", "slow")
        elif task.state == "failed":
            assert kind == "fail" and isinstance(task.exception(), ValueError)
        else:
            assert task.state == "cancelled"
    dropped = sum(1 for _, t in outcomes if t.state == "cancelled") - stats["cancelled"]
    assert dropped == stats["dropped"]


def test_soak_all_lanes_from_8_threads() -> None:
    """A CI-sized soak (make soak runs 1,000,000): every task is accounted for."""
    n_per_thread = 4000
    failures: list[BaseException] = []
    with offload.Runtime(background_loops=2, error_handler=lambda t, e: failures.append(e)) as rt:

        async def coro(i: int) -> int:
            if i % 97 == 0:
                raise KeyError(i)
            return i

        def sync(i: int) -> int:
            if i % 89 == 0:
                raise KeyError(i)
            return i

        def producer() -> None:
            for i in range(n_per_thread):
                if i % 2:
                    rt.threads.spawn(sync, i)
                else:
                    rt.background.spawn(coro, i)

        threads = [threading.Thread(target=producer) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not rt.drain_sync(60)
        stats = rt.stats()
    total = sum(s["submitted"] for s in stats.values())
    assert total == 8 * n_per_thread
    assert sum(accounted(s) for s in stats.values()) == total
    assert sum(s["failed"] for s in stats.values()) == len(failures)


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit, ValueError])
def test_base_exceptions_in_tasks_are_failures_not_crashes(exc_type: type) -> None:
    seen: list[BaseException] = []

    def raiser() -> None:
        raise exc_type("from a task")

    async def coro_raiser() -> None:
        raise exc_type("from a coroutine")

    async def main() -> None:
        async with offload.Runtime(error_handler=lambda t, e: seen.append(e)) as rt:
            a = rt.threads.spawn(raiser)
            b = rt.loop.spawn(coro_raiser)
            c = rt.background.spawn(coro_raiser)
            assert not await rt.drain(10)
            assert [a.state, b.state, c.state] == ["failed"] * 3
            # the worker and both loops keep serving
            assert await rt.threads.run(lambda: 7) == 7
            assert await rt.background.run(asyncio.sleep, 0, "ok") == "ok"

    asyncio.run(main())
    assert len(seen) == 3 and all(isinstance(e, exc_type) for e in seen)


def test_faults_self_cancel_callback_spawn_and_recursion() -> None:
    async def main() -> None:
        async with offload.Runtime() as rt:

            async def cancels_itself() -> None:
                asyncio.current_task().cancel()  # type: ignore[union-attr]
                await asyncio.sleep(1)

            me = rt.loop.spawn(cancels_itself)

            children: list[offload.Task[Any]] = []

            def parent() -> None:
                for i in range(1000):
                    children.append(rt.threads.spawn(pow, i, 2))

            rt.threads.spawn(parent)
            from_callback: list[offload.Task[Any]] = []
            first = rt.threads.spawn(lambda: 1)
            first.add_done_callback(lambda t: from_callback.append(rt.threads.spawn(lambda: 2)))
            assert not await rt.drain(20)
            assert not await rt.drain(20)  # children spawned while draining
            assert me.state == "cancelled"
            assert len(children) == 1000 and all(c.state == "succeeded" for c in children)
            assert [c.result() for c in children[:3]] == [0, 1, 4]
            assert len(from_callback) == 1 and await from_callback[0] == 2

    asyncio.run(main())


def test_cancel_storm() -> None:
    async def main() -> None:
        async with offload.Runtime(threads=2) as rt:
            gate = threading.Event()
            rt.threads.spawn(gate.wait, 10)
            rt.threads.spawn(gate.wait, 10)
            pending = [rt.threads.spawn(time.sleep, 0) for _ in range(2000)]
            coros = [rt.loop.spawn(asyncio.sleep, 10) for _ in range(2000)]
            await asyncio.sleep(0)
            cancelled = [t.cancel() for t in pending + coros]
            gate.set()
            assert not await rt.drain(20)
            assert all(cancelled)
            assert all(t.state == "cancelled" for t in pending + coros)
            stats = rt.stats()
            assert stats["threads"]["cancelled"] == 2000 and stats["loop"]["cancelled"] == 2000

    asyncio.run(main())


def test_stuck_thread_is_reported_not_waited_for(caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()

    async def main() -> set[offload.Task[Any]]:
        rt = offload.Runtime()
        rt.start()
        rt.threads.options(name="stuck-forever").spawn(release.wait)
        start = time.monotonic()
        left = await rt.shutdown(timeout=0.2)
        assert time.monotonic() - start < 10
        return left

    try:
        left = asyncio.run(main())
    finally:
        release.set()
    assert [t.name for t in left] == ["stuck-forever"]
    text = caplog.text
    assert "stuck-forever" in text and "still running" in text
