"""metrics_router: Prometheus exposition of the runtime's statistics."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest
from fastapi import FastAPI
from offload_fastapi_support import WAIT, serve
from prometheus_client.parser import text_string_to_metric_families

import offload
import offload.fastapi
from offload.fastapi import metrics_router

pytestmark = pytest.mark.anyio


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_exposition(runtime: offload.Runtime) -> None:
    app = FastAPI(lifespan=offload.fastapi.lifespan(runtime=runtime))
    app.include_router(metrics_router())

    async def boom() -> None:
        raise RuntimeError("metrics test failure")

    async with serve(app) as client:
        for _ in range(3):
            await runtime.run(sum, [1, 2])
        failing = runtime.spawn(boom)
        await runtime.drain(10)
        assert failing.state == "failed"
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    got = samples(response.text)
    assert got[("offload_tasks_submitted_total", (("lane", "threads"),))] == 3
    assert (
        got[("offload_tasks_finished_total", (("lane", "threads"), ("outcome", "succeeded")))] == 3
    )
    assert got[("offload_tasks_finished_total", (("lane", "loop"), ("outcome", "failed")))] == 1
    assert got[("offload_tasks_running", (("lane", "threads"),))] == 0
    assert got[("offload_task_run_time_seconds_count", (("lane", "threads"),))] == 3
    p99 = got[("offload_task_queue_wait_seconds", (("lane", "threads"), ("quantile", "0.99")))]
    assert p99 >= 0
    assert "# TYPE offload_task_run_time_seconds summary" in response.text


def test_collector_for_an_existing_registry() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    with offload.Runtime() as runtime:
        registry = CollectorRegistry()
        registry.register(offload.fastapi.OffloadCollector(runtime))
        assert b'offload_tasks_pending{lane="threads"} 0.0' in generate_latest(registry)


def test_clear_error_without_prometheus_client(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] == "prometheus_client"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "offload.fastapi._collector", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'offload\[metrics\]'"):
        metrics_router()
    with pytest.raises(ImportError, match=r"offload\[metrics\]"):
        offload.fastapi.OffloadCollector  # noqa: B018


async def test_task_controls_metrics(runtime: offload.Runtime) -> None:
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError(f"attempt {calls}")

    app = FastAPI(lifespan=offload.fastapi.lifespan(runtime=runtime))
    app.include_router(metrics_router())
    async with serve(app) as client:
        await runtime.options(name="metrics-flaky", retries=3, backoff=0.01).spawn(flaky)
        with pytest.raises(TimeoutError):
            await runtime.options(name="metrics-slow", timeout=0.05).spawn(asyncio.sleep, 3600)
        later = runtime.options(name="metrics-later", delay=3600).spawn(sum, [1])
        text = (await client.get("/metrics")).text
        later.cancel()
    got = samples(text)
    loop = (("lane", "loop"),)
    assert got[("offload_tasks_retried_total", loop)] == 2
    assert got[("offload_tasks_timed_out_total", loop)] == 1
    assert got[("offload_tasks_scheduled", (("lane", "threads"),))] == 1
    assert got[("offload_tasks_retrying", loop)] == 0
    assert got[("offload_tasks_overrun", (("lane", "threads"),))] == 0
    assert got[("offload_task_attempts_total", (("name", "metrics-flaky"),))] == 3
    assert got[("offload_task_retries_total", (("name", "metrics-flaky"),))] == 2
    assert got[("offload_task_attempts_total", (("name", "metrics-slow"),))] == 1
    assert "# TYPE offload_tasks_scheduled gauge" in text


async def test_schedule_metrics(runtime: offload.Runtime) -> None:
    gate = threading.Event()
    app = FastAPI(lifespan=offload.fastapi.lifespan(runtime=runtime))
    app.include_router(metrics_router())
    async with serve(app) as client:
        # The first run blocks on the gate; every later fire finds it going and is skipped.
        busy = offload.every(0.02, gate.wait, WAIT, name="metrics-busy", runtime=runtime)
        try:
            deadline = asyncio.get_running_loop().time() + WAIT
            while busy.skipped < 2:
                assert asyncio.get_running_loop().time() < deadline, "no skipped run"
                await asyncio.sleep(0.01)
            text = (await client.get("/metrics")).text
            skipped_after = busy.skipped
        finally:
            busy.cancel()
            gate.set()
    got = samples(text)
    assert got[("offload_schedule_runs_total", (("schedule", "metrics-busy"),))] == 1
    skipped = got[("offload_schedule_skipped_total", (("schedule", "metrics-busy"),))]
    assert 2 <= skipped <= skipped_after
