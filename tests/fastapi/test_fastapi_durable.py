"""The durable tier in offload.fastapi: the status router's durable endpoints, the
dashboard's "Durable queue" panel and the durable Prometheus metrics, on a real app
(httpx's ASGI transport, the app's lifespan run) and a real SQLite store in tmp_path.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from offload_fastapi_support import WAIT, serve
from prometheus_client.parser import text_string_to_metric_families

import offload
import offload.fastapi
from offload.durable import _codec, _registry
from offload.durable._store import Outcome
from offload.fastapi import dashboard_router, metrics_router, status_router
from offload.fastapi._durable import safe_repr

pytestmark = pytest.mark.anyio

#: Blocks `wait_for_gate` tasks until the test sets it (the fixture always does).
GATE = threading.Event()


def add(a: int, b: int) -> int:
    return a + b


async def declined(order: str) -> None:
    raise ValueError(f"the charge for {order} was declined")


def wait_for_gate() -> str:
    GATE.wait(WAIT * 2)
    return "let through"


def stamp() -> Any:
    import datetime

    return datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)


def not_a_number() -> float:
    return math.nan


def raw_bytes() -> bytes:
    return b"\x00\xffpng"


def make_app(runtime: offload.Runtime) -> FastAPI:
    app = FastAPI(lifespan=offload.fastapi.lifespan(runtime=runtime))
    app.include_router(status_router(dependencies=[Depends(lambda: None)], prefix="/jobs"))
    app.include_router(metrics_router())
    app.include_router(dashboard_router(authorize=lambda: None, sample_seconds=0.05), prefix="/ops")
    return app


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    GATE.clear()
    yield GATE
    GATE.set()


@pytest.fixture
async def durable_runtime(tmp_path: Path) -> AsyncIterator[offload.Runtime]:
    """A runtime working a store in tmp_path, one durable attempt at a time."""
    rt = offload.Runtime(store=f"sqlite:///{tmp_path / 'app.db'}", durable_concurrency=1)
    yield rt
    if not rt.closed:
        await rt.shutdown(10)


async def until(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT} s: {what}")
        await asyncio.sleep(0.01)


def metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def fill(rt: offload.Runtime) -> dict[str, Any]:
    """One task in each state: succeeded, dead, scheduled, running (its lease live), and
    one ready task waiting behind it (durable_concurrency=1)."""
    ok = rt.durable.spawn(add, 2, 3)
    assert await ok.result(WAIT) == 5
    dead = rt.durable.options(retries=0).spawn(declined, "order-7")
    with pytest.raises(offload.durable.DurableTaskFailed):
        await dead.result(WAIT)
    later = rt.durable.options(delay=3600).spawn(add, 1, 1)
    running = rt.durable.spawn(wait_for_gate)

    async def is_running() -> bool:
        info = await rt.durable.aget(running.id)
        return info is not None and info.state == "running"

    await until(is_running, "the gate task running")
    ready = rt.durable.spawn(add, 4, 4)
    await ready.persisted()
    await later.persisted()
    return {"ok": ok, "dead": dead, "later": later, "running": running, "ready": ready}


# -- the status router --------------------------------------------------------------------------
async def test_status_endpoints_show_the_queue_and_the_tasks(
    durable_runtime: offload.Runtime, gate: threading.Event
) -> None:
    async with serve(make_app(durable_runtime)) as client:
        try:
            tasks = await fill(durable_runtime)

            summary = (await client.get("/jobs/durable")).json()
            assert summary["enabled"] is True
            assert summary["store"] == durable_runtime.durable.url
            assert summary["by_state"] == {
                "queued": 2,
                "running": 1,
                "succeeded": 1,
                "dead": 1,
                "cancelled": 0,
            }
            assert (summary["ready"], summary["scheduled"]) == (1, 1)
            assert summary["leases"] == {"live": 1, "expired": 0}
            assert summary["oldest_ready_age"] >= 0
            process = summary["process"]
            assert process["committed"] == 5
            assert process["started"] >= 3 and process["running"] == 1

            listed = (await client.get("/jobs/durable/tasks")).json()
            assert listed["count"] == 5
            by_id = {item["id"]: item for item in listed["items"]}
            assert by_id[tasks["later"].id]["state"] == "scheduled"
            assert by_id[tasks["running"].id]["state"] == "running"
            assert by_id[tasks["running"].id]["owner"] is not None
            assert by_id[tasks["ok"].id]["has_result"] is True
            assert "result" not in by_id[tasks["ok"].id]  # lists leave results out

            only = (await client.get("/jobs/durable/tasks", params={"state": "queued"})).json()
            assert {item["id"] for item in only["items"]} == {tasks["later"].id, tasks["ready"].id}
            assert (await client.get("/jobs/durable/tasks", params={"limit": 2})).json()[
                "count"
            ] == 2
            bad = await client.get("/jobs/durable/tasks", params={"state": "scheduled"})
            assert bad.status_code == 422
            assert (await client.get("/jobs/durable/tasks", params={"limit": 0})).status_code == 422

            dead = (await client.get("/jobs/durable/dead")).json()
            assert [item["id"] for item in dead["items"]] == [tasks["dead"].id]
            assert dead["items"][0]["error_type"] == "ValueError"
            assert "the charge for order-7 was declined" in dead["items"][0]["error"]

            one = await client.get(f"/jobs/durable/tasks/{tasks['ok'].id}")
            assert one.status_code == 200
            assert one.headers["cache-control"] == "no-store"
            body = one.json()
            assert body["result"] == 5 and body["state"] == "succeeded" and body["attempt"] == 1
            assert body["function"].endswith(":add")

            missing = await client.get("/jobs/durable/tasks/no-such-task")
            assert missing.status_code == 404
            assert "no-such-task" in missing.json()["detail"]
            # The in-process routes still answer beside the durable ones.
            assert (await client.get("/jobs/123456")).status_code == 404
            gate.set()
            assert await tasks["running"].result(WAIT) == "let through"
        finally:
            gate.set()  # before the app's lifespan shuts the runtime down


async def test_results_that_are_not_json_are_shown_by_their_repr(
    durable_runtime: offload.Runtime,
) -> None:
    async with serve(make_app(durable_runtime)) as client:
        for fn in (stamp, not_a_number, raw_bytes):
            task = durable_runtime.durable.spawn(fn)
            await task.result(WAIT)
            body = (await client.get(f"/jobs/durable/tasks/{task.id}")).json()
            assert body["state"] == "succeeded"
            assert body["result"] is None
            assert body["result_repr"] == repr(fn())


class ReprRaises:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


class HostileCodec:
    """Stands for a signed-pickle codec giving back a user object whose repr raises."""

    name = "msgpack"

    def decode_result(self, fn: Any, data: bytes) -> Any:
        return ReprRaises()


async def test_a_result_whose_repr_raises_or_that_cannot_be_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A producer only: this test writes the outcome itself, as a worker elsewhere would.
    rt = offload.Runtime(store=f"sqlite:///{tmp_path / 'app.db'}", durable_concurrency=0)
    try:
        async with serve(make_app(rt)) as client:
            task = rt.durable.spawn(add, 1, 2)
            await task.persisted()

            def corrupted_outcome(store: Any) -> None:
                now = time.time()
                assert [c.id for c in store.claim("elsewhere", 1, now, 60.0)] == [task.id]
                outcome = Outcome(task.id, 1, "succeeded", result=b"\xc1")  # never valid msgpack
                assert store.finish("elsewhere", [outcome], now, 3600.0) == []

            await rt.durable._acall(corrupted_outcome, write=True)
            broken = await client.get(f"/jobs/durable/tasks/{task.id}")
            assert broken.status_code == 200
            assert broken.json()["state"] == "succeeded"
            assert broken.json()["result"] is None
            assert broken.json()["result_error"].startswith("cannot decode the result: ")

            with monkeypatch.context() as patch:
                patch.setattr(_codec, "codec_for", lambda name, key: HostileCodec())
                hostile = await client.get(f"/jobs/durable/tasks/{task.id}")
            assert hostile.status_code == 200
            assert hostile.json()["result_repr"] == "<ReprRaises object (its repr raised)>"
    finally:
        await rt.shutdown(10)


def test_a_password_in_the_store_url_is_masked() -> None:
    from offload.durable._store import display_url as shown

    assert shown("redis://app:s3cret@cache:6379/0") == "redis://app:***@cache:6379/0"
    assert shown("redis://:s3cret@cache/0") == "redis://:***@cache/0"
    assert shown("sqlite:////srv/app.db") == "sqlite:////srv/app.db"
    assert shown("memory://") == "memory://"


def test_safe_repr() -> None:
    assert safe_repr(ReprRaises()) == "<ReprRaises object (its repr raised)>"
    assert safe_repr([1, 2]) == "[1, 2]"
    long = safe_repr("x" * 5000)
    assert len(long) == 1000 and long.endswith("...")

    class BadType:
        def __repr__(self) -> Any:
            return 42

    assert safe_repr(BadType()) == "<BadType object (its repr raised)>"


async def test_without_a_durable_tier_nothing_is_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No store configured, nothing durable used: the endpoints say so, no ./offload.db."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OFFLOAD_STORE", raising=False)
    monkeypatch.setattr(_registry, "_declared", [])  # no @task(durable=True) seen
    rt = offload.Runtime(threads=2)
    try:
        async with serve(make_app(rt)) as client:
            summary = await client.get("/jobs/durable")
            assert summary.status_code == 200
            assert summary.json()["enabled"] is False
            assert "not in use" in summary.json()["detail"]
            for path in ("/jobs/durable/tasks", "/jobs/durable/tasks/abc", "/jobs/durable/dead"):
                response = await client.get(path)
                assert response.status_code == 404, path
                assert response.json()["enabled"] is False
            await asyncio.sleep(0.2)  # a few dashboard samples
            assert (await client.get("/ops/api/snapshot")).json()["durable"] is None
            assert "offload_durable" not in (await client.get("/metrics")).text
        assert rt._durable is None or not rt._durable.started
        assert list(tmp_path.iterdir()) == []
    finally:
        await rt.shutdown(10)


# -- the dashboard and the metrics -------------------------------------------------------------------
async def test_dashboard_panel_and_metrics(
    durable_runtime: offload.Runtime, gate: threading.Event
) -> None:
    async with serve(make_app(durable_runtime)) as client:
        try:
            tasks = await fill(durable_runtime)

            async def panel() -> dict[str, Any] | None:
                data = (await client.get("/ops/api/snapshot")).json()["durable"]
                depths = data and data["depths"]
                if depths and depths["by_state"]["running"] == 1 and depths["ready"] == 1:
                    return data  # type: ignore[no-any-return]
                return None

            await until(panel, "the dashboard's durable reading")
            data = await panel()
            assert data is not None
            depths = data["depths"]
            assert depths["by_state"]["dead"] == 1 and depths["by_state"]["succeeded"] == 1
            assert depths["scheduled"] == 1
            assert depths["leases"] == {"live": 1, "expired": 0}
            assert depths["oldest_ready_age"] >= 0
            assert data["process"]["committed"] == 5
            assert data["store"] == durable_runtime.durable.url
            page = (await client.get("/ops/")).text
            assert 'id="durable"' in page and "Durable queue" in page

            got = metrics((await client.get("/metrics")).text)
            assert got[("offload_durable_tasks", (("state", "succeeded"),))] == 1
            assert got[("offload_durable_tasks", (("state", "dead"),))] == 1
            assert got[("offload_durable_tasks", (("state", "queued"),))] == 2
            assert got[("offload_durable_tasks", (("state", "running"),))] == 1
            assert got[("offload_durable_ready", ())] == 1
            assert got[("offload_durable_scheduled", ())] == 1
            assert got[("offload_durable_leases", (("kind", "live"),))] == 1
            assert got[("offload_durable_leases", (("kind", "expired"),))] == 0
            assert got[("offload_durable_oldest_ready_seconds", ())] >= 0
            assert got[("offload_durable_committed_total", ())] == 5
            assert got[("offload_durable_started_total", ())] >= 3
            assert got[("offload_durable_finished_total", ())] >= 2

            gate.set()
            assert await tasks["ready"].result(WAIT) == 8
            finished = metrics((await client.get("/metrics")).text)
            assert finished[("offload_durable_tasks", (("state", "succeeded"),))] == 3
            assert finished[("offload_durable_ready", ())] == 0
            assert finished[("offload_durable_oldest_ready_seconds", ())] == 0
        finally:
            gate.set()  # before the app's lifespan shuts the runtime down


async def test_the_collector_in_a_registry_of_its_own_reads_the_depths(
    durable_runtime: offload.Runtime,
) -> None:
    """Outside metrics_router (which reads the depths first, off its loop), the collector
    asks the store itself: from the scraping thread, as prometheus_client calls it."""
    from prometheus_client import CollectorRegistry, generate_latest

    from offload.fastapi._collector import OffloadCollector

    task = durable_runtime.durable.spawn(add, 1, 1)
    assert await task.result(WAIT) == 2
    registry = CollectorRegistry()
    registry.register(OffloadCollector(durable_runtime))
    text = (await asyncio.to_thread(generate_latest, registry)).decode()
    assert metrics(text)[("offload_durable_tasks", (("state", "succeeded"),))] == 1


# -- the panel in a real browser -------------------------------------------------------------------
BROWSER_APP = """
import offload, offload.fastapi
from fastapi import FastAPI
from offload.fastapi import dashboard_router

runtime = offload.Runtime(store="sqlite:///panel.db", durable_concurrency=2)
app = FastAPI(lifespan=offload.fastapi.lifespan(runtime=runtime))
app.include_router(
    dashboard_router(authorize=lambda: None, sample_seconds=0.1), prefix="/offload"
)


def declined() -> None:
    raise ValueError("declined")


@app.get("/healthz")
async def healthz() -> str:
    return "ok"


@app.post("/spawn")
async def spawn() -> None:
    await runtime.durable.options(retries=0).spawn(declined).persisted()
    await runtime.durable.options(delay=3600).spawn(declined).persisted()
"""


@pytest.mark.no_asan  # a browser and a server in subprocesses: the browser tests' rule
def test_the_panel_in_chromium(tmp_path: Path) -> None:
    """The page shows the Durable queue panel (the app's store is opened at startup)
    and fills it from the snapshot, with no console errors."""
    import shutil
    import subprocess
    import sys

    webdriver = pytest.importorskip("selenium.webdriver")
    from offload_fastapi_support import free_port
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    if not (shutil.which("/usr/bin/chromium") and shutil.which("/usr/bin/chromedriver")):
        pytest.skip("needs Debian's chromium and chromium-driver (make system-deps)")
    (tmp_path / "panel_app.py").write_text(BROWSER_APP)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "uvicorn", "panel_app:app", "--port", str(port)]
    with (tmp_path / "server.log").open("wb") as log:
        server = subprocess.Popen(cmd, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = None
    try:
        import httpx

        deadline = time.monotonic() + WAIT
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.1)
        service = webdriver.ChromeService("/usr/bin/chromedriver")
        driver = webdriver.Chrome(options=options, service=service)
        driver.set_page_load_timeout(WAIT * 2)
        driver.get(f"{url}/offload/")
        wait = WebDriverWait(driver, WAIT, poll_frequency=0.1)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#lanes tbody tr"))
        # The store is opened at startup (store= configured): the panel is there.
        wait.until(lambda d: d.find_element(By.ID, "durable").is_displayed())
        httpx.post(f"{url}/spawn", timeout=WAIT).raise_for_status()

        def text(css: str) -> str:
            """An element's text; "" while the page redraws it (the panel is rebuilt at
            every refresh, so an element found a moment ago may be gone: stale)."""
            try:
                found = driver.find_elements(By.CSS_SELECTOR, css)
                return str(found[0].text) if found else ""
            except StaleElementReferenceException:
                return ""

        def field(name: str) -> str:
            return text(f'#durable td[data-field="{name}"]')

        def panel_shows_the_queue(_: object) -> bool:
            return (
                field("dead") == "1"
                and field("scheduled") == "1"
                and field("live_leases") == "0"
                and field("expired_leases") == "0"
                and field("oldest_ready") == "\u2013"  # nothing ready
                and "sqlite:///panel.db" in text("#durable-store")
                and "1 finished" in text("#durable-process")
            )

        wait.until(panel_shows_the_queue)
        errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(WAIT)
