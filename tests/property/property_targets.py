"""Targets of the property test (module level: processes-lane workers import them).

Each behaviour exists as a sync callable (threads, processes) and a coroutine function
(loop, background): return, raise, nap briefly, cancel itself, raise an exception whose
__repr__/__str__ raise, return an object whose __del__ raises, fail in a cleanup after
being cancelled; and, for the processes lane, results that can't cross back.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any


class Boom(Exception):
    """The plain failure of a target."""


class WeirdError(Exception):
    """A failure whose repr() and str() raise: reporting must not depend on them."""

    def __repr__(self) -> str:
        raise RuntimeError("WeirdError.__repr__ raised")

    def __str__(self) -> str:
        raise RuntimeError("WeirdError.__str__ raised")


class DelError(Exception):
    """Raised by DelRaiser.__del__ (goes to sys.unraisablehook, by design of Python)."""


#: DelRaiser raises only while the property test runs (one collected later, in another
#: test, must not count there).
ARMED = [False]


class DelRaiser:
    def __del__(self) -> None:
        if ARMED[0]:
            raise DelError("DelRaiser.__del__ raised")


class TwoArgError(Exception):
    """Pickles, but can't be rebuilt by unpickling: __init__ takes two arguments."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")


class UnpicklableWeirdError(Exception):
    """Can't be pickled (holds a lock) and its str() raises."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def __str__(self) -> str:
        raise RuntimeError("UnpicklableWeirdError.__str__ raised")


# --- sync ------------------------------------------------------------------------------------


def ret(value: int) -> int:
    return value


def boom(value: int) -> int:
    raise Boom(value)


def nap(value: int) -> int:
    time.sleep((value % 5) / 100)  # 0-40 ms
    return value


def weird(value: int) -> int:
    raise WeirdError()


def del_raiser(value: int) -> Any:
    return DelRaiser()


def cancel_self(value: int) -> int:
    raise asyncio.CancelledError()


def unpicklable_result(value: int) -> Any:
    return lambda: value


def two_arg_result(value: int) -> Any:
    return TwoArgError(value, "x")


def raise_unpicklable_weird(value: int) -> int:
    raise UnpicklableWeirdError()


SYNC = {
    "ret": ret,
    "boom": boom,
    "nap": nap,
    "weird": weird,
    "del_raiser": del_raiser,
    "cancel_self": cancel_self,
}
PROCESS_ONLY = {
    "unpicklable_result": unpicklable_result,
    "two_arg_result": two_arg_result,
    "raise_unpicklable_weird": raise_unpicklable_weird,
}

# --- async -----------------------------------------------------------------------------------


async def aret(value: int) -> int:
    await asyncio.sleep(0)
    return value


async def aboom(value: int) -> int:
    await asyncio.sleep(0)
    raise Boom(value)


async def anap(value: int) -> int:
    await asyncio.sleep((value % 5) / 100)
    return value


async def aweird(value: int) -> int:
    raise WeirdError()


async def adel_raiser(value: int) -> Any:
    return DelRaiser()


async def acancel_self(value: int) -> int:
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    await asyncio.sleep(0)
    return value


async def acleanup_fails(value: int) -> int:
    try:
        await asyncio.sleep((value % 5) / 100)
    except asyncio.CancelledError:
        raise Boom("cleanup after cancel") from None
    return value


ASYNC = {
    "ret": aret,
    "boom": aboom,
    "nap": anap,
    "weird": aweird,
    "del_raiser": adel_raiser,
    "cancel_self": acancel_self,
    "cleanup_fails": acleanup_fails,
}

#: The exception types a target raises on purpose (a task failing with one is expected).
EXPECTED_FAILURES = (Boom, WeirdError, TypeError, RuntimeError)
