"""Fixtures of the durable tier's tests.

* `loop_kind` / `arun`: tests that run an event loop run on asyncio and on uvloop.
* `store_url`: a fresh store per test, parametrized over the stores a single
  process can use ("sqlite" in tmp_path, "memory"); `sqlite_url` for tests that share
  one store between runtimes or processes.
* `make_runtime(**options)`: a Runtime closed at the end of the test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop
from waiting import run_to_completion

import offload

LOOP_KINDS = ("asyncio", "uvloop")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "durable_heavy: many real processes; only in make test (not the matrix legs, not ASan)",
    )


@pytest.fixture(params=LOOP_KINDS)
def loop_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


Arun = Callable[..., Any]


@pytest.fixture
def arun(loop_kind: str) -> Arun:
    """arun(coro, timeout=30): run a coroutine on a fresh loop of this test's kind."""

    def arun(main: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        loop = uvloop.new_event_loop() if loop_kind == "uvloop" else asyncio.new_event_loop()
        return run_to_completion(loop, asyncio.wait_for(main, timeout))

    return arun


def sqlite_url_for(path: Path) -> str:
    return "sqlite:///" + str(path)  # an absolute path: sqlite:////tmp/...


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return sqlite_url_for(tmp_path / "offload.db")


@pytest.fixture(params=["sqlite", "memory"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    return sqlite_url_for(tmp_path / "offload.db")


MakeRuntime = Callable[..., offload.Runtime]


@pytest.fixture
def make_runtime() -> Iterator[MakeRuntime]:
    made: list[offload.Runtime] = []

    def make(**options: Any) -> offload.Runtime:
        rt = offload.Runtime(**options)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        if not rt.closed:
            rt.close(5)
