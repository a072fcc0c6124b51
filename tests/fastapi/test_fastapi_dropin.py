"""The drop-in `BackgroundTasks` held to FastAPI's semantics: request-scoped (yield
dependencies and TestClient wait for the tasks), every way of writing it, install(app),
order on request, detaching, disconnects, restarts, thread names."""

# No `from __future__ import annotations`: FastAPI must resolve the routes' annotations.

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Annotated, Any

import fastapi
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient
from offload_fastapi_support import WAIT, run_python
from starlette.responses import JSONResponse, Response

import offload
import offload.fastapi
from offload.fastapi import BackgroundTasks, OffloadBackgroundTasks


@pytest.fixture
def client_options(anyio_backend: Any) -> dict[str, Any]:
    """TestClient's own event loop, asyncio or uvloop (the anyio_backend parameter)."""
    backend, options = anyio_backend
    return {"backend": backend, "backend_options": options}


@pytest.fixture
def default_runtime() -> Iterator[offload.Runtime]:
    """What an app without offload's lifespan uses: the default runtime, stood in for by
    a fresh one per test (the suite never starts this process's real one)."""
    stand_in = offload.Runtime(threads=4)
    real = offload._replace_default_runtime(stand_in)
    try:
        yield stand_in
    finally:
        offload._replace_default_runtime(real)
        stand_in.close(WAIT)


def test_yield_dependencies_and_the_client_wait_for_the_tasks(
    client_options: dict[str, Any], default_runtime: offload.Runtime
) -> None:
    app = FastAPI()  # no lifespan, TestClient without `with`: FastAPI's documented style
    events: list[str] = []
    resource = {"open": False}
    threads: list[str] = []

    def get_session() -> Iterator[dict[str, bool]]:
        resource["open"] = True
        yield resource
        events.append("teardown")
        resource["open"] = False

    def sync_task(session: dict[str, bool]) -> None:
        time.sleep(0.1)
        events.append(f"sync saw open={session['open']}")
        threads.append(threading.current_thread().name)

    async def async_task(session: dict[str, bool]) -> None:
        await asyncio.sleep(0.1)  # awaits: the client's loop must stay up for it
        events.append(f"async saw open={session['open']}")

    @app.post("/go")
    async def go(tasks: BackgroundTasks, session: Annotated[Any, Depends(get_session)]) -> None:
        tasks.add_task(sync_task, session)
        tasks.add_task(async_task, session)

    response = TestClient(app, **client_options).post("/go")
    assert response.status_code == 200
    assert sorted(events[:2]) == ["async saw open=True", "sync saw open=True"]
    assert events[2:] == ["teardown"]  # the session closed after both tasks ended
    assert threads[0].startswith("offload-threads-")


def test_a_failing_task_is_reported_and_does_not_reach_the_server(
    client_options: dict[str, Any],
    default_runtime: offload.Runtime,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="offload")
    app = FastAPI()
    ran: list[str] = []

    def boom() -> None:
        raise ValueError("boom")

    @app.post("/go")
    def go(tasks: BackgroundTasks) -> None:
        tasks.add_task(boom)
        tasks.add_task(ran.append, "after")

    # FastAPI's class re-raises into the client here; ours reports it once, by name.
    response = TestClient(app, **client_options).post("/go")
    assert response.status_code == 200 and ran == ["after"]
    failures = [r for r in caplog.records if r.exc_info and "boom" in r.getMessage()]
    assert len(failures) == 1 and isinstance(failures[0].exc_info[1], ValueError)  # type: ignore[index]


class AuditedTasks(BackgroundTasks):
    def add_audited(self, what: str, sink: list[str]) -> None:
        self.add_task(sink.append, f"audited {what}")


def test_every_way_to_write_it(
    client_options: dict[str, Any], default_runtime: offload.Runtime
) -> None:
    app = FastAPI()
    seen: dict[str, Any] = {}
    sink: list[str] = []

    def from_dependency(tasks: OffloadBackgroundTasks) -> None:
        seen["dependency"] = tasks
        tasks.add_task(sink.append, "from a dependency")

    def plain_dependency(plain: BackgroundTasks) -> None:
        seen["plain"] = plain
        plain.add_task(sink.append, "plain")

    def stock_dependency(stock: fastapi.BackgroundTasks) -> None:
        seen["stock"] = stock

    # (FastAPI passes one BackgroundTasks parameter per function: one per dependency.)
    @app.post("/go", dependencies=[Depends(stock_dependency), Depends(plain_dependency)])
    async def go(tasks: AuditedTasks, _: Annotated[None, Depends(from_dependency)]) -> None:
        seen["tasks"] = tasks
        tasks.add_audited("signup", sink)

    assert TestClient(app, **client_options).post("/go").status_code == 200
    one = seen["tasks"]
    # One object per request, as with FastAPI, and it is the annotated subclass.
    assert all(seen[key] is one for key in ("plain", "stock", "dependency"))
    assert type(one) is AuditedTasks
    assert isinstance(one, (BackgroundTasks, fastapi.BackgroundTasks))
    assert sorted(sink) == ["audited signup", "from a dependency", "plain"]
    assert [t.state for t in one.spawned] == ["succeeded"] * 3
    assert default_runtime.stats()["threads"]["succeeded"] == 3  # the runtime saw them


def test_response_background_and_middleware(
    client_options: dict[str, Any], default_runtime: offload.Runtime
) -> None:
    app = FastAPI()
    ran: list[str] = []

    @app.middleware("http")
    async def audit(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        tasks = BackgroundTasks()
        tasks.add_task(ran.append, f"middleware {request.url.path}")
        response.background = tasks
        return response

    @app.get("/response")
    async def with_response() -> JSONResponse:
        tasks = BackgroundTasks()
        tasks.add_task(ran.append, "response")
        return JSONResponse({"ok": True}, background=tasks)

    client = TestClient(app, **client_options)
    assert client.get("/response").status_code == 200
    assert sorted(ran) == ["middleware /response", "response"]


def test_install_runs_unchanged_stock_parameters_on_offload(
    client_options: dict[str, Any], default_runtime: offload.Runtime
) -> None:
    installed, plain = FastAPI(), FastAPI()
    got: dict[str, Any] = {}
    barrier = threading.Barrier(2, timeout=WAIT)

    def meet(app_name: str) -> None:
        got.setdefault(app_name, []).append(threading.current_thread().name)
        if app_name == "installed":
            barrier.wait()  # both tasks of the request must run at once

    def route(app: FastAPI, name: str) -> None:
        @app.post("/go")
        def go(tasks: fastapi.BackgroundTasks) -> None:
            got[f"{name} type"] = type(tasks)
            tasks.add_task(meet, name)
            tasks.add_task(meet, name)

    route(installed, "installed")
    route(plain, "plain")
    offload.fastapi.install(installed)

    @installed.post("/later")  # a route defined after install()
    def later(tasks: fastapi.BackgroundTasks) -> None:
        got["later type"] = type(tasks)

    with TestClient(installed, **client_options) as client:
        assert client.post("/go").status_code == 200
        assert client.post("/later").status_code == 200
    assert got["installed type"] is got["later type"] is BackgroundTasks
    assert all(name.startswith("offload-threads-") for name in got["installed"])

    # Not installed: FastAPI's own class, on AnyIO's threads.
    assert TestClient(plain, **client_options).post("/go").status_code == 200
    assert got["plain type"] is fastapi.BackgroundTasks
    assert all(name.startswith("AnyIO worker") for name in got["plain"])


def test_sequential_keeps_order_and_a_failure_does_not_skip_the_next(
    client_options: dict[str, Any], default_runtime: offload.Runtime
) -> None:
    app = FastAPI()
    log: list[str] = []

    def write(line: str, seconds: float) -> None:
        time.sleep(seconds)  # the first one is slowest: order only holds if sequential
        log.append(line)

    def fail() -> None:
        raise RuntimeError("in the middle")

    async def write_async(line: str) -> None:
        log.append(line)

    @app.post("/go")
    def go(tasks: BackgroundTasks) -> None:
        tasks.sequential = True
        tasks.add_task(write, "first", 0.2)
        tasks.add_task(fail)
        tasks.add_task(write_async, "second")
        tasks.add_task(write, "third", 0)

    assert TestClient(app, **client_options).post("/go").status_code == 200
    assert log == ["first", "second", "third"]


def test_bad_input_fails_where_it_is_written() -> None:
    with pytest.raises(TypeError, match="sequential must be True or False"):
        BackgroundTasks(sequential="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="runtime must be an offload.Runtime"):
        BackgroundTasks(runtime="default")  # type: ignore[arg-type]

    class Slotted(BackgroundTasks):
        __slots__ = ("extra",)

    app = FastAPI()
    with pytest.raises(TypeError, match="can't be used as a BackgroundTasks parameter"):

        @app.post("/go")
        def go(tasks: Slotted) -> None: ...


@pytest.mark.anyio
async def test_a_client_disconnect_does_not_cancel_the_tasks(
    runtime: offload.Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    app = FastAPI()
    sent, release = asyncio.Event(), threading.Event()
    done: list[str] = []

    def slow_sync() -> None:
        release.wait(WAIT)
        done.append("sync")

    async def slow_async() -> None:
        await asyncio.to_thread(release.wait, WAIT)
        done.append("async")

    @app.post("/go")
    async def go(tasks: BackgroundTasks) -> None:
        tasks.runtime = runtime
        tasks.add_task(slow_sync)
        tasks.add_task(slow_async)

    async def receive() -> dict[str, Any]:
        if sent.is_set():
            await asyncio.Event().wait()
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            sent.set()

    scope = {"type": "http", "method": "POST", "path": "/go", "headers": [], "query_string": b""}
    scope.update(http_version="1.1", scheme="http", server=("app", 80), root_path="")
    call = asyncio.ensure_future(app(scope, receive, send))  # type: ignore[arg-type]
    await asyncio.wait_for(sent.wait(), WAIT)
    await asyncio.sleep(0.05)
    assert not call.done()  # the request waits for its tasks...
    call.cancel()  # ...until the server gives up on it (a disconnect, a timeout)
    with pytest.raises(asyncio.CancelledError):
        await call
    # named, in case the server exits next
    assert "stopped waiting for a request's background tasks" in caplog.text
    assert "slow_sync" in caplog.text and "slow_async" in caplog.text
    release.set()
    assert not await runtime.drain(WAIT)
    assert sorted(done) == ["async", "sync"]


def test_detach_without_a_lifespan_warns_and_stays_request_scoped(
    client_options: dict[str, Any],
    default_runtime: offload.Runtime,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from offload.fastapi import _background

    _background._detach_warned = False
    app = FastAPI()
    done: list[str] = []

    def slow() -> None:
        time.sleep(0.1)
        done.append("slow")

    @app.post("/go")
    def go(tasks: BackgroundTasks) -> None:
        tasks.detach = True  # nothing would drain it at shutdown: not detached, and said so
        tasks.add_task(slow)

    assert TestClient(app, **client_options).post("/go").status_code == 200
    assert done == ["slow"]
    assert "detach needs the app to drain at shutdown" in caplog.text


LOOPS = pytest.mark.parametrize("use_uvloop", [False, True], ids=["asyncio", "uvloop"])


@LOOPS
def test_the_default_runtime_restarts_with_each_app_start(use_uvloop: bool) -> None:
    """TestClient per test: lifespan start, stop, start... on the default runtime."""
    child = run_python(
        """
        import asyncio, json, threading
        from fastapi import FastAPI
        from fastapi.testclient import TestClient
        import offload, offload.fastapi
        from offload.fastapi import BackgroundTasks

        app = FastAPI(lifespan=offload.fastapi.lifespan(drain_timeout=1))
        release = threading.Event()

        async def forever():
            await asyncio.Event().wait()

        @app.post("/go")
        async def go(tasks: BackgroundTasks, n: int):
            tasks.detach = True
            tasks.add_task(forever)
            return {"runtime": id(offload.default_runtime()),
                    "live": len(offload.default_runtime()._live_tasks()),
                    "spawn": offload.spawn(threading.current_thread).lane,
                    "threads": offload.threads.spawn(lambda: None).lane}

        seen = []
        for n in range(3):
            with TestClient(app, backend_options={"use_uvloop": USE_UVLOOP}) as client:
                seen.append(client.post("/go", params={"n": n}).json())
        print(json.dumps(seen))
        """.replace("USE_UVLOOP", repr(use_uvloop))
    )
    assert child.returncode == 0, child.stderr
    seen = json.loads(child.stdout)
    assert len({s["runtime"] for s in seen}) == 3  # a fresh runtime per start
    assert [s["live"] for s in seen] == [0, 0, 0]  # nothing of one start in the next
    assert [(s["spawn"], s["threads"]) for s in seen] == [("threads", "threads")] * 3
    # each start's never-ending task was cancelled and named at its shutdown
    assert child.stderr.count("'forever'") >= 3, child.stderr


@LOOPS
def test_install_covers_routes_made_before_offload_was_imported(use_uvloop: bool) -> None:
    child = run_python(
        """
        import threading
        from fastapi import BackgroundTasks, FastAPI
        from fastapi.testclient import TestClient

        app = FastAPI()
        names = []

        @app.post("/go")
        def go(tasks: BackgroundTasks):
            tasks.add_task(lambda: names.append(threading.current_thread().name))
            return type(tasks).__module__

        import offload.fastapi  # after the route exists
        offload.fastapi.install(app)
        with TestClient(app, backend_options={"use_uvloop": USE_UVLOOP}) as client:
            print(client.post("/go").json(), names[0].rsplit("-", 1)[0])
        """.replace("USE_UVLOOP", repr(use_uvloop))
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == ["offload.fastapi._background", "offload-threads"]


@pytest.mark.anyio
async def test_detached_in_order_outlives_the_request_and_is_drained(
    runtime: offload.Runtime,
) -> None:
    from offload_fastapi_support import serve

    app = FastAPI(lifespan=offload.fastapi.lifespan(runtime=runtime, drain_timeout=WAIT))
    release = threading.Event()
    log: list[str] = []

    def write(line: str) -> None:
        release.wait(WAIT)
        log.append(line)

    async def write_async(line: str) -> None:
        log.append(line)

    def fail() -> None:
        raise RuntimeError("a failing step")

    @app.post("/go")
    async def go(tasks: BackgroundTasks) -> None:
        tasks.detach = tasks.sequential = True
        tasks.add_task(write, "one")
        tasks.add_task(fail)
        tasks.add_task(write_async, "two")
        tasks.add_task(write, "three")

    async with serve(app) as client:
        assert (await client.post("/go")).status_code == 200
        assert log == []  # the request ended before its tasks
        release.set()
    # the lifespan's shutdown drained them, in order
    assert log == ["one", "two", "three"]
