"""Task functions of the durable tests: module level, so workers import them back."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import threading
import time

import offload

#: What ran in this process: (name, args) in order.
ran: list[tuple[str, tuple[object, ...]]] = []
ran_lock = threading.Lock()
#: Opened by tests that hold a task running.
gate = threading.Event()
#: Failures left before fail_then_succeed succeeds, by key.
failures_left: dict[str, int] = {}


def note(name: str, *args: object) -> None:
    with ran_lock:
        ran.append((name, args))


def add(a: int, b: int) -> int:
    note("add", a, b)
    return a + b


async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0.001)
    note("async_add", a, b)
    return a + b


def fail(message: str) -> None:
    note("fail", message)
    raise ValueError(message)


def fail_then_succeed(key: str) -> str:
    note("fail_then_succeed", key)
    left = failures_left.get(key, 0)
    if left:
        failures_left[key] = left - 1
        raise ConnectionError(f"{key}: {left} failures left")
    return "ok"


def ask_retry(delay: float) -> None:
    note("ask_retry", delay)
    raise offload.Retry(delay=delay)


def wait_gate() -> str:
    note("wait_gate")
    gate.wait(20)
    return "opened"


async def async_sleep(seconds: float) -> str:
    note("async_sleep", seconds)
    await asyncio.sleep(seconds)
    return "slept"


def sleep(seconds: float) -> str:
    note("sleep", seconds)
    time.sleep(seconds)
    return "slept"


@dataclasses.dataclass
class Point:
    x: int
    y: int


def shift(p: Point, when: datetime.datetime) -> Point:
    note("shift", p, when)
    return Point(p.x + 1, p.y + when.year)


def tick() -> None:
    note("tick")


@offload.task(durable=True, retries=2, backoff=0.01)
def decorated(x: int) -> int:
    note("decorated", x)
    return x * 2


class Opaque:
    """Not MessagePack-able: travels only with serializer="pickle"."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.value == self.value

    __hash__ = None  # type: ignore[assignment]


def bump(o: Opaque) -> Opaque:
    note("bump", o.value)
    return Opaque(o.value + 1)
