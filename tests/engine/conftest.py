"""Fixtures of the engine contract suite.

* `loop_kind` / `arun`: every test that runs an event loop runs twice, on asyncio's
  default loop and on uvloop; `arun(coro)` runs it on a fresh loop, bounded by a timeout.
* `runtime(**options)`: an explicit `offload.Runtime`, closed when the test ends (tests
  also shut their runtimes down themselves); in loop tests its background loops are of
  the same kind.
* Guards on every test: asyncio must never log lost work ("Task exception was never
  retrieved", "Task was destroyed but it is pending") and no exception may escape to
  sys.unraisablehook or threading.excepthook.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

import offload

from .support import LOOP_KINDS, loop_factory, run_loop

LOST_WORK = ("exception was never retrieved", "Task was destroyed but it is pending")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/engine/" in item.nodeid.replace("\\", "/"):
            item.add_marker(
                pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
            )
            item.add_marker(
                pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
            )
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


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(autouse=True)
def no_lost_work() -> Iterator[None]:
    """Fail the test if asyncio reports a lost task or an unretrieved exception."""
    handler = _Collect()
    asyncio_logger = logging.getLogger("asyncio")
    asyncio_logger.addHandler(handler)
    try:
        yield
    finally:
        import gc

        gc.collect()
        asyncio_logger.removeHandler(handler)
    text = "\n".join(handler.messages)
    for message in LOST_WORK:
        assert message not in text, f"asyncio logged {message!r}:\n{text[-3000:]}"


@pytest.fixture
def offload_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """caplog with every record of the `offload` logger (DEBUG and up)."""
    caplog.set_level(logging.DEBUG, logger="offload")
    return caplog
