"""Fixtures for the hard cases of the usual recipes (issue 6): every test runs on asyncio and uvloop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
import uvloop
from waiting import run_to_completion

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
        return run_to_completion(factory(), coro)

    yield run


@pytest.fixture(params=sorted(LOOPS))
def loop_factory(request: pytest.FixtureRequest) -> Callable[[], Any]:
    return LOOPS[request.param]
