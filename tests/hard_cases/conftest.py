"""Fixtures for the hard cases of the usual recipes (issue 6): every test runs on asyncio and uvloop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
import uvloop

T = TypeVar("T")

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@pytest.fixture(params=sorted(LOOPS))
def run_loop(request: pytest.FixtureRequest) -> Iterator[Callable[[Awaitable[T]], T]]:
    """Run a coroutine to completion on a fresh loop of the parametrized kind."""
    factory = LOOPS[request.param]

    def run(coro: Awaitable[T]) -> T:
        # What asyncio.Runner (3.11+) does, also on 3.10: run, cancel what is left,
        # finish async generators and the default executor, close.
        loop = factory()
        asyncio.set_event_loop(loop)
        try:
            return loop.run_until_complete(coro)
        finally:
            try:
                left = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in left:
                    task.cancel()
                if left:
                    loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    yield run


@pytest.fixture(params=sorted(LOOPS))
def loop_factory(request: pytest.FixtureRequest) -> Callable[[], Any]:
    return LOOPS[request.param]
