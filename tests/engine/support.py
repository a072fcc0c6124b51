"""Helpers shared by the engine contract tests: loops of both kinds, bounded waits,
gates, concurrency peaks, subprocesses and log records."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

import uvloop
from waiting import async_wait_until, run_to_completion, wait_until

import offload

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]

#: Every test that runs an event loop runs on both kinds.
LOOP_KINDS = ("asyncio", "uvloop")

#: Bound of every wait in the suite: long enough for a noisy 2-core machine, short
#: enough that a hang fails the test instead of stalling the run.
WAIT = 10.0

#: Counters that end a submission: with pending + running they add up to `submitted`.
TERMINAL_COUNTERS = ("succeeded", "failed", "cancelled", "dropped", "rejected")


def loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """`asyncio.new_event_loop` or `uvloop.new_event_loop`."""
    if kind == "uvloop":
        return uvloop.new_event_loop
    assert kind == "asyncio", kind
    return asyncio.new_event_loop


def run_loop(kind: str, main: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run `main` on a fresh loop of `kind` (like asyncio.run), bounded by `timeout`."""
    return run_to_completion(loop_factory(kind)(), asyncio.wait_for(main, timeout))


class Gate:
    """A thread-safe gate tasks wait on; every wait is bounded by WAIT."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def wait(self) -> bool:
        """Block a thread until the gate opens (False if it never did)."""
        return self._event.wait(WAIT)

    async def async_wait(self) -> bool:
        """Wait in a coroutine without blocking its loop."""
        return await async_wait_until(self._event.is_set)

    def open(self) -> None:
        self._event.set()

    def is_open(self) -> bool:
        return self._event.is_set()


class Peak:
    """Counts how many tasks are inside `with peak:` at once, and the maximum seen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.max = 0
        self.entered = 0

    def __enter__(self) -> None:
        with self._lock:
            self.now += 1
            self.entered += 1
            self.max = max(self.max, self.now)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.now -= 1


def in_flight(lane_stats: dict[str, Any]) -> int:
    keys = ("pending", "running", "scheduled", "retrying")
    return sum(int(lane_stats.get(k, 0)) for k in keys)


def accounted(lane_stats: dict[str, Any]) -> int:
    """What `submitted` must equal: terminal counters plus the tasks in flight."""
    return sum(int(lane_stats[k]) for k in TERMINAL_COUNTERS) + in_flight(lane_stats)


def counters(lane_stats: dict[str, Any]) -> dict[str, int]:
    """The integer counters of one lane's stats (no percentiles, no limits)."""
    keys = ("submitted", "pending", "running", *TERMINAL_COUNTERS)
    return {k: int(lane_stats[k]) for k in keys}


def native_thread_names() -> list[str]:
    """OS-level names of this process's threads (pool workers are C threads)."""
    names = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                names.append(f.read().strip())
        except OSError:  # the thread exited meanwhile (ENOENT or ESRCH)
            continue
    return names


def pool_workers() -> int:
    """How many `threads` lane workers exist right now, by OS thread name."""
    return native_thread_names().count("offload-worker")


def other_pool_workers() -> int:
    """Workers of runtimes from earlier tests still exiting: wait (bounded) for them to go
    and return how many remain, the baseline of this test's own count."""
    wait_until(lambda: pool_workers() == 0, timeout=5.0)
    return pool_workers()


def records_of(caplog_records: Iterable[logging.LogRecord], level: int) -> list[logging.LogRecord]:
    """Records of the `offload` logger at exactly `level`."""
    return [r for r in caplog_records if r.name == "offload" and r.levelno == level]


def run_python(code: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run `python -c code` in a fresh interpreter (its own default runtime).

    Fails the test if the child outlives `timeout`; stdout and stderr are captured apart.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=str(ROOT),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the child hung for more than {timeout} s: {exc.stderr!r}")


def lane_names_of(rt: offload.Runtime) -> dict[str, offload.Lane]:
    """The lanes of the contract (`processes` is built elsewhere and left out)."""
    return {"loop": rt.loop, "background": rt.background, "threads": rt.threads}
