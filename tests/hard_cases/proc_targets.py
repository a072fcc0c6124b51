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


class TwoArgError(Exception):
    """Pickles (args holds one message) but can't be rebuilt: __init__ needs two."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")


def raise_two_arg_error() -> None:
    raise TwoArgError(7, "bad")


def return_two_arg_error() -> object:
    return TwoArgError(7, "bad")


class UnpicklableStrRaises(Exception):
    """Can't be pickled (holds a lock) and whose str() raises."""

    def __init__(self) -> None:
        super().__init__()
        import threading

        self.lock = threading.Lock()

    def __str__(self) -> str:
        raise RuntimeError("__str__ exploded")


def raise_unpicklable_str_raises() -> None:
    raise UnpicklableStrRaises()
