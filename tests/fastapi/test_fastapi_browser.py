"""The dashboard page in real headless Chromium (Debian's chromium + chromium-driver)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from offload_fastapi_support import WAIT

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = os.environ.get("OFFLOAD_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("OFFLOAD_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
TOKEN = "t0ken"  # testapp_offload.TOKEN


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip("needs Debian's chromium and chromium-driver (make system-deps)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT * 2)
    yield driver
    driver.quit()


def console_errors(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def open_page(driver: Any, url: str) -> None:
    """Leave the previous test's page (its server is gone: its polls fail) and forget its
    console, then open `url`."""
    driver.get("about:blank")
    driver.get_log("browser")
    driver.get(url)


def cell(driver: Any, lane: str, field: str) -> str:
    selector = f'#lanes tr[data-lane="{lane}"] td[data-field="{field}"]'
    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return str(found[0].text) if found else ""


def wait_for(driver: Any, condition: Any, what: str) -> Any:
    # The page re-renders its tables on every poll: an element may go stale while read.
    wait = WebDriverWait(
        driver, WAIT, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
    )
    return wait.until(lambda d: condition(d), message=f"timed out waiting for {what}")


def test_dashboard_in_chromium(start_server: Any, browser: Any) -> None:
    server = start_server()
    spawn = f"{server.url}/spawn"
    browser.get(f"{server.url}/offload/?token={TOKEN}")
    wait_for(browser, lambda d: cell(d, "threads", "submitted") == "0", "the lanes table")
    assert browser.title == "offload dashboard"

    # Counts rise as tasks run.
    for i in range(3):
        params: dict[str, Any] = {"kind": "sync", "name": f"browser-sync-{i}", "seconds": 0}
        httpx.post(spawn, params=params, timeout=WAIT).raise_for_status()
    wait_for(browser, lambda d: cell(d, "threads", "succeeded") == "3", "3 succeeded tasks")

    # A running task is listed with its name, lane and age.
    params = {"kind": "async", "name": "browser-slow-task", "seconds": 60}
    httpx.post(spawn, params=params, timeout=WAIT).raise_for_status()
    row = wait_for(
        browser,
        lambda d: [r.text for r in d.find_elements(By.CSS_SELECTOR, "#tasks tbody tr")],
        "the running task",
    )[0]
    assert "browser-slow-task" in row and "loop" in row and "running" in row

    # A failure appears with its traceback.
    params = {"kind": "fail", "name": "browser-exploding-task"}
    httpx.post(spawn, params=params, timeout=WAIT).raise_for_status()
    failure = wait_for(
        browser,
        lambda d: [
            f
            for f in d.find_elements(By.CSS_SELECTOR, "#failures details.failure")
            if "browser-exploding-task" in f.text
        ],
        "the failure",
    )[0]
    assert "ValueError: boom from browser-exploding-task" in failure.text
    failure.find_element(By.TAG_NAME, "summary").click()
    traceback = failure.find_element(By.CSS_SELECTOR, "pre.traceback").text
    assert "Traceback (most recent call last)" in traceback and "in fail_async" in traceback

    assert console_errors(browser) == []


@pytest.mark.parametrize(("query", "status"), [("", 401), ("?token=wrong", 403)])
def test_unauthorized_in_chromium(start_server: Any, browser: Any, query: str, status: int) -> None:
    server = start_server()
    browser.get_log("browser")  # start from an empty console
    browser.get(f"{server.url}/offload/{query}")
    assert browser.title != "offload dashboard"
    assert browser.find_elements(By.ID, "lanes") == []
    errors = console_errors(browser)
    assert any(f"status of {status}" in message for message in errors), errors


def chart(driver: Any, lane: str, series: str) -> dict[str, str]:
    """What the page drew for one lane's series: its data attributes and the line's points."""
    selector = f'svg.chart[data-lane="{lane}"][data-series="{series}"]'
    found = driver.find_elements(By.CSS_SELECTOR, selector)
    if not found:
        return {}
    lines = found[0].find_elements(By.CSS_SELECTOR, "polyline.line")
    return {
        "total": found[0].get_attribute("data-total") or "",
        "max": found[0].get_attribute("data-max") or "",
        "points": lines[0].get_attribute("points") if lines else "",
    }


def drawn_heights(points: str) -> list[float]:
    """The y coordinates of an SVG polyline, as heights above the chart's bottom (56)."""
    return [56 - float(pair.split(",")[1]) for pair in points.split()]


def test_charts_schedules_and_the_task_page_in_chromium(start_server: Any, browser: Any) -> None:
    server = start_server()
    spawn = f"{server.url}/spawn"
    open_page(browser, f"{server.url}/offload/?token={TOKEN}")
    wait_for(browser, lambda d: chart(d, "threads", "finished").get("total") == "0", "the charts")
    window = browser.find_element(By.ID, "history-window").text
    assert window == "2 minutes", window

    # Throughput: finished tasks show as a rise in the threads lane's chart.
    for i in range(4):
        params: dict[str, Any] = {"kind": "sync", "name": f"chart-sync-{i}", "seconds": 0}
        httpx.post(spawn, params=params, timeout=WAIT).raise_for_status()
    wait_for(browser, lambda d: chart(d, "threads", "finished").get("total") == "4", "4 finished")
    finished = chart(browser, "threads", "finished")
    assert float(finished["max"]) > 0 and max(drawn_heights(finished["points"])) > 40

    # Failures and retries: a task failing twice then succeeding, one failing for good.
    httpx.post(spawn, params={"kind": "flaky", "name": "chart-flaky"}, timeout=WAIT)
    failing = httpx.post(spawn, params={"kind": "fail", "name": "chart-fail"}, timeout=WAIT).json()
    wait_for(browser, lambda d: chart(d, "loop", "retried").get("total") == "2", "2 retries")
    wait_for(browser, lambda d: chart(d, "loop", "failed").get("total") == "1", "1 failure")
    assert chart(browser, "threads", "failed")["total"] == "0"

    # Scheduled work: a delayed task, with its next run.
    params = {"kind": "later", "name": "chart-later", "seconds": 1800}
    later = httpx.post(spawn, params=params, timeout=WAIT).json()
    row = wait_for(
        browser,
        lambda d: d.find_elements(By.CSS_SELECTOR, f'#delayed tr[data-task-id="{later["id"]}"]'),
        "the delayed task",
    )[0]
    assert "chart-later" in row.text and "in 30 min" in row.text
    assert cell(browser, "threads", "scheduled") == "1"

    # The task page, reached by id: a server URL that lands on the page's #task/<id>.
    browser.get(f"{server.url}/offload/task/{failing['id']}?token={TOKEN}")
    wait_for(
        browser,
        lambda d: "ValueError: boom from chart-fail" in d.find_element(By.ID, "task-view").text,
        "the failed task's page",
    )
    assert browser.current_url.endswith(f"/offload/?token={TOKEN}#task/{failing['id']}")

    def field(name: str) -> str:
        return str(
            browser.find_element(By.CSS_SELECTOR, f'#task-detail td[data-field="{name}"]').text
        )

    assert field("state") == "failed" and field("name") == "chart-fail" and field("attempt") == "1"
    assert "in fail_async" in browser.find_element(By.ID, "task-traceback").text

    # ... and from the id box: the retried task, succeeded on its third attempt.
    flaky = [
        r
        for r in browser.find_elements(By.CSS_SELECTOR, "#failures details")
        if "chart-flaky" in r.text
    ]
    assert flaky == []  # retried attempts are not failures
    box = browser.find_element(By.ID, "find-task-id")
    box.clear()
    box.send_keys(str(later["id"]))
    browser.find_element(By.CSS_SELECTOR, "#find-task button").click()
    wait_for(browser, lambda _: field("name") == "chart-later", "the delayed task's page")
    assert field("state") == "scheduled" and "in 30 min" in field("scheduled_for")

    assert console_errors(browser) == []

    # An id the runtime does not know says so (Chromium logs the 404 it got, nothing else).
    browser.get(f"{server.url}/offload/?token={TOKEN}#task/987654321")
    wait_for(
        browser,
        lambda d: "No task with id 987654321" in d.find_element(By.ID, "task-missing").text,
        "the unknown task's message",
    )
    errors = console_errors(browser)
    assert errors and all("api/task/987654321" in e and "404" in e for e in errors), errors


def test_periodic_work_in_chromium(start_server: Any, browser: Any) -> None:
    server = start_server()
    open_page(browser, f"{server.url}/offload/?token={TOKEN}")
    hourly = wait_for(
        browser,
        lambda d: d.find_elements(By.CSS_SELECTOR, '#periodic tr[data-schedule="testapp-hourly"]'),
        "the app's periodic job",
    )[0]
    assert "in 60 min" in hourly.text or "in 59 min" in hourly.text, hourly.text
    assert "testapp-hourly" in hourly.text
    assert console_errors(browser) == []
