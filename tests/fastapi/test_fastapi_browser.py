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
