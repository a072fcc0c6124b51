"""Module-level callables for the processes lane (a worker process imports them)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def add(x: int, y: int = 1) -> int:
    return x + y


def pid() -> int:
    return os.getpid()


def fail(message: str) -> None:
    raise ValueError(message)


def exit_hard(code: int) -> None:
    os._exit(code)


def sleep_then(seconds: float, value: int) -> int:
    time.sleep(seconds)
    return value


def announce_and_sleep(path: str, seconds: float) -> int:
    """Write this worker's pid where the test can read it, then sleep (to be killed)."""
    Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()


def burn(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def unpicklable_result() -> object:
    return lambda: None
