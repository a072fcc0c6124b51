"""Task lookup, the Python half: `offload.TaskInfo`, the snapshot that
`runtime.get(task_id)` and `runtime.tasks(...)` return for status endpoints. The
engine keeps the records (live tasks in its registries, the `keep_finished` most
recent finished ones in `csrc/history.c`); this file only shapes and filters them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._engine import Task

STATES = ("scheduled", "pending", "running", "retrying", "succeeded", "failed", "cancelled")
#: The engine's numbering of states and lanes (csrc/task.h task_state, csrc/lane.h lane_kind).
ENGINE_STATES = ("pending", "running", "scheduled", "retrying", "succeeded", "failed", "cancelled")
ENGINE_LANES = ("loop", "background", "threads", "processes")


@dataclass(frozen=True)
class TaskInfo:
    """What is known about one task, live or finished (times are epoch seconds)."""

    id: int
    name: str
    lane: str
    state: str
    attempt: int
    key: str | None
    submitted_at: float | None
    started_at: float | None
    finished_at: float | None
    scheduled_for: float | None
    error: str | None
    error_type: str | None
    _task: Task[Any] | None = field(default=None, repr=False, compare=False)

    @property
    def task(self) -> Task[Any] | None:
        """The live Task (to await or cancel it), or None once it finished."""
        return self._task

    @property
    def done(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled")

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (no Task object)."""
        return {
            "id": self.id,
            "name": self.name,
            "lane": self.lane,
            "state": self.state,
            "attempt": self.attempt,
            "key": self.key,
            "submitted_at": self.submitted_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "scheduled_for": self.scheduled_for,
            "error": self.error,
            "error_type": self.error_type,
        }


def info_from_engine(record: dict[str, Any]) -> TaskInfo:
    task = record.pop("task")
    info = TaskInfo(**record, _task=task)
    if info.done:  # a live record of a task that ended meanwhile: drop the object
        object.__setattr__(info, "_task", None)
    return info


def check_filters(state: str | None, lane: str | None, limit: int | None) -> None:
    if state is not None and state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)} or None, not {state!r}")
    if lane is not None and lane not in ("loop", "background", "threads", "processes"):
        raise ValueError(
            f"lane must be 'loop', 'background', 'threads' or 'processes', not {lane!r}"
        )
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be an int >= 0 or None, not {limit!r}")


def check_task_id(task_id: Any) -> int:
    if isinstance(task_id, bool) or not isinstance(task_id, int):
        raise TypeError(f"task_id must be an int (Task.id), not {type(task_id).__name__}")
    return int(task_id)
