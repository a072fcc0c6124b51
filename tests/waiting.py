"""Wait helpers every test folder shares (tests/ is on sys.path: `from waiting import ...`).

Polls are bounded: a condition that never comes true fails its test instead of hanging.
`run_to_completion` is what asyncio.Runner does (3.11+), also on 3.10.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

#: The default bound of a wait (generous: the machine is shared and noisy).
WAIT = 10.0


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
    """Poll `predicate` from a thread (never on a loop) until true or `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.002)
    return predicate()


async def async_wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
    """`wait_until` for coroutines: polls without blocking the loop."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.002)
    return predicate()


def run_to_completion(loop: asyncio.AbstractEventLoop, main: Awaitable[T]) -> T:
    """Run `main` on `loop` as the thread's current loop, then cancel what is left,
    finish async generators and the default executor, and close the loop."""
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main)
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
