"""dashboard_router: closed by default, self-contained page, JSON content, arguments hidden."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import pytest
from fastapi import FastAPI, Header, HTTPException
from offload_fastapi_support import WAIT, serve

import offload
import offload.fastapi
from offload.fastapi import dashboard_router

pytestmark = pytest.mark.anyio

ROUTES = [
    "/ops/",
    "/ops/api/snapshot",
    "/ops/api/stats",
    "/ops/api/tasks",
    "/ops/api/failures",
    "/ops/api/history",
    "/ops/api/schedules",
    "/ops/api/task/1",
    "/ops/task/1",
]
AUTH = {"Authorization": "Bearer let-me-in"}


def require_bearer(authorization: Annotated[str | None, Header()] = None) -> None:
    if authorization is None:
        raise HTTPException(401, "missing credentials", headers={"WWW-Authenticate": "Bearer"})
    if authorization != AUTH["Authorization"]:
        raise HTTPException(403, "not allowed")


def make_app(runtime: offload.Runtime, **options: Any) -> FastAPI:
    app = FastAPI(lifespan=offload.fastapi.lifespan(runtime=runtime))
    app.include_router(dashboard_router(authorize=require_bearer, **options), prefix="/ops")
    return app


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """Blocks the sync tasks of a test until it ends."""
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
async def busy_runtime(gate: threading.Event) -> AsyncIterator[offload.Runtime]:
    """A runtime whose thread lane runs one task at a time (so the next one stays pending)."""
    rt = offload.Runtime(threads=2, lanes={"threads": {"max_running": 1}})
    yield rt
    gate.set()
    if not rt.closed:
        await rt.shutdown(WAIT)


def test_mounting_without_authorize_is_refused() -> None:
    with pytest.raises(TypeError, match="authorize"):
        dashboard_router()
    with pytest.raises(TypeError, match="authorize"):
        dashboard_router(None)
    with pytest.raises(TypeError, match="authorize"):
        dashboard_router("admin")  # type: ignore[arg-type]


async def test_unauthorized_requests_get_401_or_403(runtime: offload.Runtime) -> None:
    async with serve(make_app(runtime)) as client:
        for route in ROUTES:
            assert (await client.get(route)).status_code == 401, route
            wrong = {"Authorization": "Bearer guess"}
            assert (await client.get(route, headers=wrong)).status_code == 403, route
            allowed = (await client.get(route, headers=AUTH)).status_code
            assert allowed in (200, 303, 404), route  # 404: no task 1 on this runtime


async def test_the_page_is_self_contained(runtime: offload.Runtime) -> None:
    async with serve(make_app(runtime)) as client:
        response = await client.get("/ops/", headers=AUTH)
    html = response.text
    assert response.headers["content-type"].startswith("text/html")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "no external resources"
    assert "<script src" not in html and '<link rel="stylesheet"' not in html
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    script = re.search(r"<script>(.*)</script>", html, re.DOTALL)
    assert script is not None
    digest = base64.b64encode(hashlib.sha256(script.group(1).encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp


async def wait_until(predicate: Any) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_snapshot_shows_lanes_tasks_and_failures(
    busy_runtime: offload.Runtime, gate: threading.Event
) -> None:
    rt = busy_runtime

    async def explode() -> None:
        raise ValueError("kaboom in the dashboard test")

    async with serve(make_app(rt)) as client:
        running = rt.options(name="report-blocker").spawn(gate.wait, WAIT)
        pending = rt.options(name="report-queued").spawn(gate.wait, WAIT)
        failing = rt.options(name="dashboard-exploder").spawn(explode)
        await wait_until(lambda: running.state == "running" and failing.done())
        data = (await client.get("/ops/api/snapshot", headers=AUTH)).json()
        assert pending.state == "pending"
        gate.set()

    threads = data["lanes"]["threads"]
    assert threads["submitted"] >= 2 and threads["running"] == 1 and threads["pending"] == 1
    assert set(threads["queue_wait"]) == {"p50", "p90", "p99", "count"}
    assert data["lanes"]["loop"]["failed"] >= 1

    tasks = {t["name"]: t for t in data["tasks"]["items"]}
    assert tasks["report-blocker"]["state"] == "running"
    assert tasks["report-queued"]["state"] == "pending"
    assert tasks["report-queued"]["lane"] == "threads"
    assert tasks["report-blocker"]["age"] >= 0
    assert data["tasks"]["running"] >= 1 and data["tasks"]["pending"] >= 1

    # The failure log is process-wide: pick this test's failure by its unique task id.
    [failure] = [f for f in data["failures"]["items"] if f["task_id"] == failing.id]
    assert failure["task_name"] == "dashboard-exploder" and failure["lane"] == "loop"
    assert "ValueError: kaboom in the dashboard test" in failure["exception"]
    assert "Traceback (most recent call last)" in failure["traceback"]
    assert "in explode" in failure["traceback"]


async def test_each_json_endpoint(runtime: offload.Runtime) -> None:
    async with serve(make_app(runtime)) as client:
        await runtime.run(sum, [1, 2])
        stats = (await client.get("/ops/api/stats", headers=AUTH)).json()
        tasks = (await client.get("/ops/api/tasks", headers=AUTH)).json()
        failures = (await client.get("/ops/api/failures?limit=1", headers=AUTH)).json()
        too_many = await client.get("/ops/api/failures?limit=100000", headers=AUTH)
    assert stats["threads"]["succeeded"] == 1
    assert set(tasks) == {"total", "scheduled", "pending", "running", "retrying", "items"}
    assert set(failures) == {"total", "items"} and len(failures["items"]) <= 1
    assert too_many.status_code == 422


@pytest.mark.parametrize("show_args", [False, True])
async def test_task_arguments_only_with_show_args(
    busy_runtime: offload.Runtime, gate: threading.Event, show_args: bool
) -> None:
    rt = busy_runtime

    def send_invoice(card: str, *, password: str) -> None:
        gate.wait(WAIT)

    async with serve(make_app(rt, show_args=show_args)) as client:
        rt.spawn(send_invoice, "4111-1111-card", password="hunter2-secret")
        bodies = [(await client.get(route, headers=AUTH)).text for route in ROUTES]
        gate.set()
    leaked = any("4111-1111-card" in body or "hunter2-secret" in body for body in bodies)
    assert leaked is show_args


async def test_a_fixed_runtime_can_be_given(runtime: offload.Runtime) -> None:
    other = offload.Runtime()
    app = FastAPI(lifespan=offload.fastapi.lifespan(runtime=runtime))
    app.include_router(dashboard_router(authorize=lambda: None, runtime=other), prefix="/ops")
    async with serve(app) as client:
        await runtime.run(sum, [1])
        stats = (await client.get("/ops/api/stats")).json()
    assert stats["threads"]["submitted"] == 0  # `other` ran nothing
    await other.shutdown(1)


async def test_the_task_view_data(runtime: offload.Runtime) -> None:
    async def explode() -> None:
        raise ValueError("kaboom for the task view")

    async with serve(make_app(runtime)) as client:
        failing = runtime.options(name="task-view-exploder").spawn(explode)
        ok = runtime.options(name="task-view-ok").spawn(sum, [1, 2])
        await runtime.drain(WAIT)
        got_failed = (await client.get(f"/ops/api/task/{failing.id}", headers=AUTH)).json()
        got_ok = (await client.get(f"/ops/api/task/{ok.id}", headers=AUTH)).json()
        missing = await client.get("/ops/api/task/987654321", headers=AUTH)
        page = await client.get(f"/ops/task/{ok.id}?token=abc", headers=AUTH)
    assert got_failed["state"] == "failed" and got_failed["attempt"] == 1
    assert got_failed["error"] == "ValueError: kaboom for the task view"
    assert "Traceback (most recent call last)" in got_failed["traceback"]
    assert "in explode" in got_failed["traceback"]
    assert got_ok["state"] == "succeeded" and got_ok["lane"] == "threads"
    assert got_ok["traceback"] is None and got_ok["error"] is None
    assert got_ok["submitted_at"] <= got_ok["started_at"] <= got_ok["finished_at"]
    assert missing.status_code == 404 and missing.json()["id"] == 987654321
    # The task page is the dashboard's own, at #task/<id>; the query string goes along.
    assert page.status_code == 303
    assert page.headers["location"] == f"../?token=abc#task/{ok.id}"


async def test_scheduled_work(runtime: offload.Runtime) -> None:
    def tick() -> None:
        pass

    async with serve(make_app(runtime)) as client:
        soon = runtime.options(name="dash-soon", delay=1800, key="report:7").spawn(tick)
        later = runtime.options(name="dash-later", delay=3600).spawn(tick)
        snapshot = (await client.get("/ops/api/snapshot", headers=AUTH)).json()
        alone = (await client.get("/ops/api/schedules?limit=1", headers=AUTH)).json()
        soon.cancel()
        later.cancel()
    schedules = snapshot["schedules"]
    assert [t["name"] for t in schedules["delayed"]] == ["dash-soon", "dash-later"]
    first = schedules["delayed"][0]
    assert first["id"] == soon.id and first["key"] == "report:7" and first["lane"] == "threads"
    assert first["scheduled_for"] >= snapshot["time"] + 1700
    assert schedules["delayed_total"] == 2
    assert alone["delayed_total"] == 2 and len(alone["delayed"]) == 1
    assert snapshot["lanes"]["threads"]["scheduled"] == 2
    assert snapshot["tasks"]["scheduled"] == 2


async def test_periodic_work(runtime: offload.Runtime) -> None:
    def tick() -> None:
        pass

    async with serve(make_app(runtime)) as client:
        hourly = offload.every(3600, tick, name="dash-hourly", runtime=runtime)
        snapshot = (await client.get("/ops/api/snapshot", headers=AUTH)).json()
        hourly.cancel()
    schedules = snapshot["schedules"]
    [periodic] = [s for s in schedules["periodic"] if s["name"] == "dash-hourly"]
    assert periodic["runs"] == 0 and periodic["skipped"] == 0 and periodic["last_task"] is None
    assert snapshot["time"] + 3500 <= periodic["next_run"] <= snapshot["time"] + 3700
