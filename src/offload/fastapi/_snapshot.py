"""The dashboard's data: plain JSON-ready dicts built from the runtime and the failure log."""

from __future__ import annotations

import heapq
import math
import reprlib
import time
from collections import Counter
from typing import Any

from .. import Runtime, Task
from ._durable import durable_of, stats
from ._failures import FailureLog

#: Per-lane counters and gauges, in display order (read with a default of 0).
COUNTERS = (
    "submitted",
    "scheduled",
    "pending",
    "running",
    "retrying",
    "overrun",
    "succeeded",
    "failed",
    "cancelled",
    "retried",
    "timed_out",
    "rejected",
    "dropped",
)
#: States of a task that has not finished, in the order a task goes through them.
UNFINISHED = ("scheduled", "pending", "running", "retrying")
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
    by_state: Counter[str] = Counter(task.state for task in live)
    return {
        "total": len(live),
        **{state: by_state[state] for state in UNFINISHED},
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


def task(runtime: Runtime, task_id: int, log: FailureLog) -> dict[str, Any] | None:
    """One task's state, attempts, timings and error (with its traceback if the failure
    log still has it), or None if the runtime does not know (or no longer keeps) it."""
    info = runtime.get(task_id)
    if info is None:
        return None
    item: dict[str, Any] = info.as_dict()
    tracebacks = [f.traceback for f in log.recent() if f.task_id == task_id]
    item["traceback"] = tracebacks[-1] if tracebacks else None
    return item


def schedules(runtime: Runtime, *, limit: int) -> dict[str, Any]:
    """Periodic schedules (`runtime.schedules()`) and delayed tasks, soonest first."""
    periodic = [_schedule(s) for s in runtime.schedules()]
    periodic.sort(key=lambda s: (s["next_run"] is None, s["next_run"] or 0.0))
    # From the live tasks, not runtime.tasks(): no record is built for the other ones.
    waiting = [task for task in runtime._live_tasks() if task.state == "scheduled"]
    soonest = heapq.nsmallest(limit, waiting, key=_due)
    delayed = [
        {
            "id": task.id,
            "name": task.name,
            "lane": task.lane,
            "key": task.key,
            "scheduled_for": task.scheduled_for,
        }
        for task in soonest
    ]
    return {
        "periodic": periodic[:limit],
        "delayed_total": len(waiting),
        "delayed": delayed,
    }


def _due(task: Task[Any]) -> float:
    due = task.scheduled_for
    return math.inf if due is None else due


def _schedule(schedule: Any) -> dict[str, Any]:
    next_run = schedule.next_run
    last = schedule.last_task
    return {
        "name": schedule.name,
        "next_run": next_run.timestamp() if next_run is not None else None,
        "runs": int(schedule.runs),
        "skipped": int(schedule.skipped),
        "last_task": None if last is None else {"id": last.id, "state": last.state},
    }


def failures(log: FailureLog, *, limit: int) -> dict[str, Any]:
    """The most recent failures (newest first) and how many were seen in total."""
    recent = log.recent()[-limit:]
    return {"total": log.total, "items": [f.as_dict() for f in reversed(recent)]}


def durable(runtime: Runtime, reading: dict[str, Any] | None) -> dict[str, Any] | None:
    """The "Durable queue" panel: None when the runtime's durable tier is not in use;
    else this process's counters and the sampler's latest depths (`depths` is None until
    the first reading, taken one sampling interval after the sampler starts)."""
    tier = durable_of(runtime)
    if tier is None:
        return None
    return {"store": tier.shown_url, "process": stats(tier), "depths": reading}


def snapshot(runtime: Runtime, log: FailureLog, *, show_args: bool, limit: int) -> dict[str, Any]:
    """Everything the dashboard page shows, in one document."""
    return {
        "time": time.time(),
        "runtime": {"started": runtime.started, "closed": runtime.closed},
        "lanes": lanes(runtime),
        "tasks": tasks(runtime, show_args=show_args, limit=limit),
        "schedules": schedules(runtime, limit=limit),
        "failures": failures(log, limit=limit),
    }
