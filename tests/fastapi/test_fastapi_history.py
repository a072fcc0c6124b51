"""The dashboard's chart history: per-lane samples of runtime.stats(), bounded, sampled
server-side from the app's startup and stopped with it."""

from __future__ import annotations

import asyncio
import math
import threading
from typing import Any

import pytest
from fastapi import FastAPI
from offload_fastapi_support import WAIT, serve

import offload
import offload.fastapi
from offload.fastapi import dashboard_router
from offload.fastapi._history import SERIES, History, Sampler, Samplers

pytestmark = pytest.mark.anyio


def lane_stats(**values: int) -> dict[str, Any]:
    return {"threads": {"succeeded": 0, "failed": 0, "cancelled": 0, **values}}


def named(sample: dict[str, Any]) -> dict[str, dict[str, int]]:
    """A sample's per-lane lists as dicts, by the series' names."""
    return {
        lane: dict(zip(SERIES, values, strict=True)) for lane, values in sample["lanes"].items()
    }


def sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "offload-dashboard-sampler"]


def test_samples_are_changes_per_interval_and_gauges_as_they_are() -> None:
    history = History(interval=1.0, keep=10)
    history.record(lane_stats(succeeded=5, failed=1, pending=9), now=100.0)
    assert history.since()["samples"] == []  # the first one is the baseline
    history.record(
        lane_stats(succeeded=8, failed=3, cancelled=1, retried=2, pending=4, scheduled=7),
        now=102.0,
    )
    [sample] = history.since()["samples"]
    assert sample["seq"] == 1 and sample["dt"] == pytest.approx(2.0)
    assert named(sample)["threads"] == {
        "finished": 3 + 2 + 1,
        "failed": 2,
        "retried": 2,
        "pending": 4,
        "running": 0,
        "scheduled": 7,
        "retrying": 0,
        "overrun": 0,
    }


def test_history_is_bounded_and_read_incrementally() -> None:
    history = History(interval=1.0, keep=5)
    for i in range(100):
        history.record(lane_stats(succeeded=i), now=float(i))
    assert len(history) == 5
    everything = history.since()
    assert everything["last"] == 99 and [s["seq"] for s in everything["samples"]] == [
        95,
        96,
        97,
        98,
        99,
    ]
    assert all(named(s)["threads"]["finished"] == 1 for s in everything["samples"])
    assert [s["seq"] for s in history.since(97)["samples"]] == [98, 99]
    assert history.since(99)["samples"] == []


def test_a_counter_going_down_counts_from_zero() -> None:
    history = History(interval=1.0, keep=5)
    history.record(lane_stats(succeeded=50), now=0.0)
    history.record(lane_stats(succeeded=2), now=1.0)
    [sample] = history.since()["samples"]
    assert named(sample)["threads"]["finished"] == 0


def test_samplers_keep_what_the_window_needs() -> None:
    assert Samplers(interval=1.0, history_seconds=900.0).keep == 900
    assert Samplers(interval=5.0, history_seconds=900.0).keep == 180
    assert Samplers(interval=0.3, history_seconds=1.0).keep == math.ceil(1 / 0.3)


async def test_a_sampler_counts_what_the_runtime_finished(runtime: offload.Runtime) -> None:
    history = History(interval=3600.0, keep=10)  # the thread never wakes: sample by hand
    sampler = Sampler(runtime, history)
    sampler.start()
    try:
        for i in range(4):
            await runtime.run(sum, [i])

        async def fail() -> None:
            raise ValueError("counted by the sampler")

        with pytest.raises(ValueError, match="counted by the sampler"):
            await runtime.spawn(fail)
        assert sampler.sample()
    finally:
        sampler.stop(WAIT)
    [sample] = history.since()["samples"]
    assert named(sample)["threads"]["finished"] == 4
    assert named(sample)["loop"]["finished"] == 1 and named(sample)["loop"]["failed"] == 1
    assert set(sample["lanes"]) == set(runtime.stats())


async def test_a_sampler_ends_when_its_runtime_closes() -> None:
    rt = offload.Runtime()
    sampler = Sampler(rt, History(interval=0.01, keep=10))
    sampler.start()
    await rt.shutdown(WAIT)
    sampler._thread.join(WAIT)
    assert not sampler._thread.is_alive()
    assert not sampler.sample()


def test_stats_that_raise_are_logged_once_and_sampling_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    class Flaky(offload.Runtime):
        def stats(self) -> Any:
            nonlocal calls
            calls += 1
            if calls % 2:
                raise RuntimeError("stats broke")
            return super().stats()

    with Flaky() as rt:
        history = History(interval=3600.0, keep=10)
        sampler = Sampler(rt, history)
        for _ in range(6):
            assert sampler.sample()
    assert calls == 6 and len(history) == 2  # three baselines-or-samples got through
    logged = [r for r in caplog.records if "runtime.stats() failed" in r.getMessage()]
    assert len(logged) == 1 and logged[0].name == "offload"


async def test_the_dashboard_samples_from_startup_and_stops_with_the_app(
    runtime: offload.Runtime,
) -> None:
    app = FastAPI(lifespan=offload.fastapi.lifespan(runtime=runtime))
    router = dashboard_router(authorize=lambda: None, sample_seconds=0.05, history_seconds=60)
    app.include_router(router, prefix="/ops")
    async with serve(app) as client:
        assert len(sampler_threads()) == 1  # started by the app's startup, before any request
        for i in range(5):
            await runtime.run(sum, [i])
        deadline = asyncio.get_running_loop().time() + WAIT
        while True:
            history = (await client.get("/ops/api/history")).json()
            finished = sum(named(s)["threads"]["finished"] for s in history["samples"])
            if finished == 5:
                break
            assert asyncio.get_running_loop().time() < deadline, history
            await asyncio.sleep(0.05)
        assert history["interval"] == 0.05 and history["keep"] == 1200
        assert history["series"] == list(SERIES)
        later = (await client.get(f"/ops/api/history?after={history['last']}")).json()
        assert all(s["seq"] > history["last"] for s in later["samples"])
        snapshot = (await client.get(f"/ops/api/snapshot?after={history['last']}")).json()
        assert snapshot["history"]["last"] >= history["last"]
    assert sampler_threads() == []  # joined at shutdown


def test_bad_sampling_options_are_refused() -> None:
    for name, value in [
        ("sample_seconds", 0),
        ("sample_seconds", -1.0),
        ("sample_seconds", float("nan")),
        ("history_seconds", float("inf")),
        ("refresh_seconds", 0),
    ]:
        with pytest.raises(ValueError, match=name):
            dashboard_router(authorize=lambda: None, **{name: value})
    with pytest.raises(TypeError, match="sample_seconds"):
        dashboard_router(authorize=lambda: None, sample_seconds="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="history_seconds"):
        dashboard_router(authorize=lambda: None, sample_seconds=10, history_seconds=5)


async def test_without_a_lifespan_sampling_starts_on_first_use_and_resumes(
    runtime: offload.Runtime,
) -> None:
    samplers = Samplers(interval=3600.0, history_seconds=7200.0)
    history = samplers.history(runtime)  # e.g. a FastAPI that runs no router lifespan
    assert len(sampler_threads()) == 1
    assert samplers.history(runtime) is history and len(sampler_threads()) == 1
    samplers.stop(runtime, WAIT)
    assert sampler_threads() == []
    await runtime.run(sum, [1])
    assert samplers.history(runtime) is history  # resumed: the same samples, a new thread
    assert len(sampler_threads()) == 1 and len(history) == 1
    assert named(history.since()["samples"][0])["threads"]["finished"] == 1
    await runtime.shutdown(WAIT)
    samplers.stop(runtime, WAIT)
    assert samplers.history(runtime) is history and sampler_threads() == []  # closed: no thread
