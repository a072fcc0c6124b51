"""Fixtures of the engine contract suite.

* `loop_kind` / `arun`: every test that runs an event loop runs twice, on asyncio's
  default loop and on uvloop; `arun(coro)` runs it on a fresh loop, bounded by a timeout.
* `runtime(**options)`: an explicit `offload.Runtime`, closed when the test ends (tests
  also shut their runtimes down themselves); in loop tests its background loops are of
  the same kind.
* The guards on every test (lost work, unraisable exceptions, leftovers) and the
  `offload_log` fixture are in tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

import offload

from .support import LOOP_KINDS, loop_factory, run_loop


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/engine/" in item.nodeid.replace("\\", "/"):
            item.add_marker(pytest.mark.timeout(60))


@pytest.fixture(params=LOOP_KINDS)
def loop_kind(request: pytest.FixtureRequest) -> str:
    """'asyncio' or 'uvloop'."""
    return str(request.param)


Arun = Callable[..., Any]


@pytest.fixture
def arun(loop_kind: str) -> Arun:
    """arun(coro, timeout=30): run a coroutine on a fresh loop of this test's kind."""

    def arun(main: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        return run_loop(loop_kind, main, timeout)

    return arun


MakeRuntime = Callable[..., offload.Runtime]


@pytest.fixture
def runtime(request: pytest.FixtureRequest) -> Iterator[MakeRuntime]:
    """runtime(**options) -> offload.Runtime, closed at the end of the test."""
    made: list[offload.Runtime] = []
    callspec = getattr(request.node, "callspec", None)
    kind = callspec.params.get("loop_kind") if callspec is not None else None

    def make(**options: Any) -> offload.Runtime:
        if kind is not None:
            options.setdefault("loop_factory", loop_factory(kind))
        rt = offload.Runtime(**options)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        if not rt.closed:
            rt.close(5)
