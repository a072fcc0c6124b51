"""The dashboard's data: plain JSON-ready dicts built from the runtime and the failure log."""

from __future__ import annotations

import reprlib
import time
from collections import Counter
from typing import Any

from .. import Runtime, Task
from ._failures import FailureLog

#: Per-lane counters, in display order (all are in `Runtime.stats()`).
COUNTERS = (
    "submitted",
    "pending",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "rejected",
    "dropped",
)
PERCENTILES = ("p50", "p90", "p99")
LATENCIES = ("queue_wait", "run_time")

_arg_repr = reprlib.Repr()
_arg_repr.maxstring = 80
_arg_repr.maxother = 80


def lanes(runtime: Runtime) -> dict[str, dict[str, Any]]:
    """Counters and latency percentiles (seconds) per lane, from `runtime.stats()`."""
    return {name: _lane(stats) for name, stats in runtime.stats().items()}


def _lane(stats: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {key: int(stats.get(key, 0)) for key in COUNTERS}
    for latency in LATENCIES:
        values = stats.get(latency) or {}
        out[latency] = {p: float(values.get(p, 0.0)) for p in PERCENTILES}
        out[latency]["count"] = int(values.get("count", 0))
    return out


def tasks(runtime: Runtime, *, show_args: bool, limit: int) -> dict[str, Any]:
    """Unfinished tasks, oldest first, at most `limit` of them, plus counts by state."""
    live = [task for task in runtime._live_tasks() if not task.done()]
    live.sort(key=lambda task: task.age, reverse=True)
    by_state = Counter(task.state for task in live)
    return {
        "total": len(live),
        "pending": by_state["pending"],
        "running": by_state["running"],
        "items": [_task(task, show_args) for task in live[:limit]],
    }


def _task(task: Task[Any], show_args: bool) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": task.id,
        "name": task.name,
        "lane": task.lane,
        "state": task.state,
        "age": task.age,
    }
    if show_args:
        item["args"] = [_arg_repr.repr(arg) for arg in task._args]
        item["kwargs"] = {key: _arg_repr.repr(value) for key, value in task._kwargs.items()}
    return item


def failures(log: FailureLog, *, limit: int) -> dict[str, Any]:
    """The most recent failures (newest first) and how many were seen in total."""
    recent = log.recent()[-limit:]
    return {"total": log.total, "items": [f.as_dict() for f in reversed(recent)]}


def snapshot(runtime: Runtime, log: FailureLog, *, show_args: bool, limit: int) -> dict[str, Any]:
    """Everything the dashboard page shows, in one document."""
    return {
        "time": time.time(),
        "runtime": {"started": runtime.started, "closed": runtime.closed},
        "lanes": lanes(runtime),
        "tasks": tasks(runtime, show_args=show_args, limit=limit),
        "failures": failures(log, limit=limit),
    }
