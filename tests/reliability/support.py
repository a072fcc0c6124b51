"""Helpers shared by the reliability tests."""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import offload

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

#: Set by tools/sanitize.sh ("asan" or "tsan").
SANITIZER = os.environ.get("OFFLOAD_SANITIZER", "")
#: Size of the heaviest workloads. Only the engine is instrumented (CPython isn't), so
#: sanitizer runs are barely slower and keep the full size: a race needs interleavings
#: to show up. OFFLOAD_TEST_SCALE (e.g. 0.25 on a very slow machine) overrides it.
SCALE = float(os.environ.get("OFFLOAD_TEST_SCALE", "1.0"))

COUNTERS = ("succeeded", "failed", "cancelled", "dropped", "rejected")


def scaled(n: int, minimum: int = 1) -> int:
    return max(minimum, int(n * SCALE))


def accounted(lane_stats: dict[str, Any]) -> int:
    """succeeded + failed + cancelled + dropped + rejected of one lane."""
    return sum(lane_stats[k] for k in COUNTERS)


def assert_all_accounted(stats: dict[str, dict[str, Any]]) -> None:
    """After a drain/shutdown: nothing in flight and the identity holds on every lane."""
    for name, s in stats.items():
        assert s["pending"] == 0 and s["running"] == 0, (name, s)
        assert s["active"] == 0 and s["waiting"] == 0, (name, s)
        assert s["submitted"] == accounted(s), (name, {k: s[k] for k in ("submitted", *COUNTERS)})


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, step: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


class Reports:
    """An error_handler that records every call, thread-safely."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[int, str, BaseException]] = []

    def __call__(self, task: offload.Task[Any], exc: BaseException) -> None:
        with self.lock:
            self.calls.append((task.id, task.name, exc))

    def by_id(self) -> collections.Counter[int]:
        with self.lock:
            return collections.Counter(i for i, _, _ in self.calls)

    def __len__(self) -> int:
        with self.lock:
            return len(self.calls)


class LoopThread:
    """An asyncio loop running in its own thread (an app's loop, seen from outside)."""

    def __init__(self, name: str = "app-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start_runtime(self, rt: offload.Runtime) -> None:
        async def start() -> None:
            rt.start()

        self.call(start())

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        assert not self.thread.is_alive(), "the loop thread did not stop"


def run_python(
    code: str | None = None,
    *,
    args: list[str] | None = None,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
) -> tuple[int, str, float]:
    """Run `python -c code` (or `python args...`); return (status, stdout+stderr, seconds).

    The child inherits the environment (so sanitizer runs instrument it too). A child that
    outlives `timeout` is killed and reported as a hang.
    """
    cmd = [sys.executable, *(["-c", code] if code is not None else []), *(args or [])]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    start = time.monotonic()
    try:
        proc = subprocess.run(  # noqa: PLW1510 (the caller checks the status)
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            env=full_env,
            cwd=str(ROOT),
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode()
        raise AssertionError(f"child hung for more than {timeout} s; output:\n{out[-4000:]}")
    return proc.returncode, proc.stdout, time.monotonic() - start


#: What asyncio and CPython print when work is lost or an error goes unseen.
LOST_WORK_MESSAGES = (
    "Task was destroyed but it is pending",
    "exception was never retrieved",
    "was never awaited",
    "Exception ignored",
    "Fatal Python error",
    "Segmentation fault",
)


def assert_no_lost_work_messages(text: str) -> None:
    for message in LOST_WORK_MESSAGES:
        assert message not in text, f"{message!r} in output:\n{text[-4000:]}"


# --- known engine bugs -------------------------------------------------------------
# Each has a repro in tests/test_bad_input.py (here: "full:on_full=reject:background").
# The broad tests (model, soak) check for the bug once and, while it is there, tolerate
# exactly its symptom so they keep hunting for other bugs; once it is fixed they are
# strict again on their own.

_probe_cache: dict[str, bool] = {}


def refused_coroutine_raises_systemerror() -> bool:
    """Bug: a coroutine refused at admission (Full, or Closed by a racing shutdown)
    raises SystemError("... returned NULL without setting an exception") instead."""
    if "refused_coro" not in _probe_cache:

        async def forever() -> None:
            await asyncio.sleep(3600)

        rt = offload.Runtime(lanes={"background": {"max_running": 1, "max_pending": 0}})
        rt.background.spawn(forever)
        try:
            rt.background.spawn(forever)
            buggy = False
        except offload.Full:
            buggy = False
        except SystemError:
            buggy = True
        finally:
            rt.close(0.2)
        _probe_cache["refused_coro"] = buggy
    return _probe_cache["refused_coro"]
