"""Fixtures of the durable tier's tests.

* `loop_kind` / `arun`: tests that run an event loop run on asyncio and on uvloop.
* `store_url`: a fresh store per test, parametrized over the two stores: "sqlite"
  (a file in tmp_path) and "redis" (a queue of its own, by its prefix, on the
  session's private redis-server); `sqlite_url` for SQLite-only tests, `redis_url`
  for Redis-only ones. The in-memory store is the SQLite store on ":memory:": the
  store contract suite covers it.
* `make_runtime(**options)`: a Runtime closed at the end of the test.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop
from redis_server import RedisClusterServers, RedisServer
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


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), session=True)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A Redis Cluster of three primaries, for the session."""
    cluster = RedisClusterServers(tmp_path_factory.mktemp("redis-cluster"), session=True)
    yield cluster
    cluster.stop()


_prefixes = itertools.count(1)


def redis_url_for(server: RedisServer | RedisClusterServers) -> str:
    """A queue of its own on `server`: nothing another test wrote is seen."""
    return f"{server.url}?prefix=t{next(_prefixes)}"


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_url_for(redis_server)


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        return redis_url_for(request.getfixturevalue("redis_server"))
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
