"""status_router: closed by default; a task's state, attempt, timings and error as JSON."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Header, HTTPException
from offload_fastapi_support import WAIT, serve

import offload
import offload.fastapi
from offload.fastapi import status_router

pytestmark = pytest.mark.anyio

AUTH = {"Authorization": "Bearer let-me-in"}
FIELDS = {
    "id",
    "name",
    "lane",
    "state",
    "attempt",
    "key",
    "submitted_at",
    "started_at",
    "finished_at",
    "scheduled_for",
    "error",
    "error_type",
}


def require_bearer(authorization: Annotated[str | None, Header()] = None) -> None:
    if authorization is None:
        raise HTTPException(401, "missing credentials", headers={"WWW-Authenticate": "Bearer"})
    if authorization != AUTH["Authorization"]:
        raise HTTPException(403, "not allowed")


def make_app(app_runtime: offload.Runtime, **options: Any) -> FastAPI:
    app = FastAPI(lifespan=offload.fastapi.lifespan(runtime=app_runtime))
    options.setdefault("dependencies", [Depends(require_bearer)])
    app.include_router(status_router(prefix="/jobs", **options))
    return app


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def test_it_is_closed_by_default() -> None:
    for dependencies in (None, [], ()):
        with pytest.raises(TypeError, match=r"needs dependencies=\[Depends"):
            status_router(dependencies=dependencies)
    with pytest.raises(TypeError, match="closed by default"):
        status_router()
    with pytest.raises(TypeError, match=r"wrap the dependency: dependencies=\[Depends"):
        status_router(dependencies=[require_bearer])
    with pytest.raises(TypeError, match="needs dependencies"):
        status_router(dependencies="admin")  # type: ignore[arg-type]


def test_bad_options_are_refused() -> None:
    deps = [Depends(require_bearer)]
    for prefix in ("jobs", "/jobs/", "", 3):
        with pytest.raises(ValueError, match="prefix"):
            status_router(dependencies=deps, prefix=prefix)  # type: ignore[arg-type]
    for max_limit in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="max_limit"):
            status_router(dependencies=deps, max_limit=max_limit)  # type: ignore[arg-type]


async def test_unauthorized_requests_get_401_or_403(runtime: offload.Runtime) -> None:
    async with serve(make_app(runtime)) as client:
        task = runtime.spawn(asyncio.sleep, 0)
        await task
        for route in (f"/jobs/{task.id}", "/jobs"):
            assert (await client.get(route)).status_code == 401, route
            wrong = {"Authorization": "Bearer guess"}
            assert (await client.get(route, headers=wrong)).status_code == 403, route
            assert (await client.get(route, headers=AUTH)).status_code == 200, route


async def test_a_finished_task(runtime: offload.Runtime) -> None:
    async def boom() -> None:
        raise ValueError("the status says why")

    async with serve(make_app(runtime)) as client:
        ok = runtime.options(name="status-ok").spawn(asyncio.sleep, 0)
        failed = runtime.options(name="status-boom").spawn(boom)
        await runtime.drain(WAIT)
        got_ok = (await client.get(f"/jobs/{ok.id}", headers=AUTH)).json()
        response = await client.get(f"/jobs/{failed.id}", headers=AUTH)
    assert response.headers["cache-control"] == "no-store"
    got_failed = response.json()
    assert set(got_ok) >= FIELDS
    assert got_ok["id"] == ok.id and got_ok["name"] == "status-ok" and got_ok["lane"] == "loop"
    assert got_ok["state"] == "succeeded" and got_ok["attempt"] == 1
    assert got_ok["error"] is None and got_ok["error_type"] is None
    assert got_ok["submitted_at"] <= got_ok["started_at"] <= got_ok["finished_at"]
    assert got_failed["state"] == "failed"
    assert got_failed["error"] == "ValueError: the status says why"
    assert got_failed["error_type"] == "ValueError"


async def test_a_running_and_a_scheduled_task(
    runtime: offload.Runtime, gate: threading.Event
) -> None:
    async with serve(make_app(runtime)) as client:
        running = runtime.options(name="status-running").spawn(gate.wait, WAIT)
        later = runtime.options(name="status-later", delay=3600).spawn(sum, [1])
        deadline = asyncio.get_running_loop().time() + WAIT
        while running.state != "running":
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        got_running = (await client.get(f"/jobs/{running.id}", headers=AUTH)).json()
        got_later = (await client.get(f"/jobs/{later.id}", headers=AUTH)).json()
        later.cancel()
        gate.set()
    assert got_running["state"] == "running" and got_running["lane"] == "threads"
    assert got_running["started_at"] is not None and got_running["finished_at"] is None
    assert got_later["state"] == "scheduled" and got_later["started_at"] is None
    assert got_later["scheduled_for"] >= got_later["submitted_at"] + 3500


async def test_retried_attempts_show(runtime: offload.Runtime) -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError(f"attempt {calls}")
        return "third time"

    async with serve(make_app(runtime)) as client:
        task = runtime.options(name="status-flaky", retries=5, backoff=0.01).spawn(flaky)
        assert await task == "third time"
        got = (await client.get(f"/jobs/{task.id}", headers=AUTH)).json()
    assert got["state"] == "succeeded" and got["attempt"] == 3 and got["error"] is None


async def test_an_unknown_id_is_a_clear_404(runtime: offload.Runtime) -> None:
    async with serve(make_app(runtime)) as client:
        missing = await client.get("/jobs/987654321", headers=AUTH)
        not_an_id = await client.get("/jobs/abc", headers=AUTH)
        impossible = [await client.get(f"/jobs/{i}", headers=AUTH) for i in (-1, 0, 10**30)]
    assert missing.status_code == 404
    body = missing.json()
    assert body["id"] == 987654321
    assert "no task with id 987654321" in body["detail"] and "keep_finished" in body["detail"]
    assert not_an_id.status_code == 422
    assert [r.status_code for r in impossible] == [404, 404, 404]


async def test_another_runtimes_task_is_unknown(runtime: offload.Runtime) -> None:
    other = offload.Runtime()
    try:
        theirs = other.spawn(sum, [1])
        await theirs
        async with serve(make_app(runtime)) as client:
            assert (await client.get(f"/jobs/{theirs.id}", headers=AUTH)).status_code == 404
        app = make_app(runtime, runtime=other)
        async with serve(app) as client:
            got = (await client.get(f"/jobs/{theirs.id}", headers=AUTH)).json()
        assert got["state"] == "succeeded"
    finally:
        await other.shutdown(WAIT)


async def test_listing_with_filters(runtime: offload.Runtime, gate: threading.Event) -> None:
    async with serve(make_app(runtime)) as client:
        for i in range(3):
            await runtime.options(name="status-report").run(sum, [i])
        await runtime.options(name="status-other").run(sum, [9])
        keyed = runtime.options(name="status-keyed", key="user:42:refresh").spawn(gate.wait, WAIT)

        async def get(query: str) -> Any:
            response = await client.get(f"/jobs{query}", headers=AUTH)
            assert response.status_code == 200, response.text
            return response.json()

        reports = await get("?name=status-report")
        by_key = await get("?key=user:42:refresh")
        succeeded_threads = await get("?state=succeeded&lane=threads")
        limited = await get("?name=status-report&limit=2")
        everything = await get("")
        bad_state = await client.get("/jobs?state=sleeping", headers=AUTH)
        bad_limit = await client.get("/jobs?limit=0", headers=AUTH)
        bad_lane = await client.get("/jobs?lane=nowhere", headers=AUTH)
        gate.set()
        await keyed
    assert reports["count"] == 3 and {t["name"] for t in reports["items"]} == {"status-report"}
    assert [t["id"] for t in by_key["items"]] == [keyed.id]
    assert by_key["items"][0]["key"] == "user:42:refresh"
    assert succeeded_threads["count"] == 4
    assert all(t["state"] == "succeeded" for t in succeeded_threads["items"])
    assert limited["count"] == 2
    assert everything["count"] >= 5
    assert bad_state.status_code == 422 and "scheduled" in bad_state.text
    assert bad_limit.status_code == 422
    assert bad_lane.status_code == 422 and "threads" in bad_lane.text


async def test_it_is_in_the_openapi_schema_with_its_prefix(runtime: offload.Runtime) -> None:
    async with serve(make_app(runtime)) as client:
        schema = (await client.get("/openapi.json")).json()
    assert "/jobs/{task_id}" in schema["paths"] and "/jobs" in schema["paths"]
