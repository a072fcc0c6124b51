"""A bounded, process-wide record of recent task failures, for the dashboard.

The runtime reports every failure exactly once, on the `offload` logger (unless an
`error_handler` option takes over). `FailureLog` watches that logger through a
`logging.Filter`: it sees each record the logger handles, keeps the ones carrying an
exception, and lets every record through untouched. A filter rather than a handler,
because adding a handler would change where records go (it disables Python's
"last resort" stderr output when nothing else is configured).
"""

from __future__ import annotations

import ast
import logging
import re
import threading
import traceback
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

#: How the runtime describes a task in its log messages (see offload._runtime._describe).
_TASK_DESCRIPTION = re.compile(
    r"(?P<name>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")"
    r" \(id=(?P<id>\d+), lane=(?P<lane>\w+), state=(?P<state>\w+)\)"
)

DEFAULT_CAPACITY = 100


@dataclass(frozen=True)
class Failure:
    """One failure as logged: when, which task, the message, the exception and traceback."""

    seq: int
    time: float
    task_name: str | None
    task_id: int | None
    lane: str | None
    message: str
    exception: str
    traceback: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FailureLog(logging.Filter):
    """Keeps the last `capacity` records with an exception that pass through a logger."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._recent: deque[Failure] = deque(maxlen=capacity)
        self._seq = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            self._add(record, record.exc_info[1])
        return True

    def recent(self) -> list[Failure]:
        """Oldest first."""
        with self._lock:
            return list(self._recent)

    @property
    def total(self) -> int:
        """Failures seen since the log was installed (including those no longer kept)."""
        return self._seq

    def _add(self, record: logging.LogRecord, exc: BaseException) -> None:
        message = record.getMessage()
        name, task_id, lane = _task_of(record, message)
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        with self._lock:
            self._seq += 1
            self._recent.append(
                Failure(
                    seq=self._seq,
                    time=record.created,
                    task_name=name,
                    task_id=task_id,
                    lane=lane,
                    message=message,
                    exception="".join(traceback.format_exception_only(type(exc), exc)).strip(),
                    traceback=text,
                )
            )


def _task_of(record: logging.LogRecord, message: str) -> tuple[str | None, int | None, str | None]:
    """The runtime attaches the task to its records; other records are parsed."""
    task = getattr(record, "offload_task", None)
    if task is not None:
        return str(task.name), int(task.id), str(task.lane)
    return _parse_task(message)


def _parse_task(message: str) -> tuple[str | None, int | None, str | None]:
    match = _TASK_DESCRIPTION.search(message)
    if match is None:
        return None, None, None
    try:
        name = ast.literal_eval(match["name"])
    except (ValueError, SyntaxError):
        name = match["name"]
    return str(name), int(match["id"]), match["lane"]


_install_lock = threading.Lock()
_installed: FailureLog | None = None


def failure_log() -> FailureLog:
    """The process-wide FailureLog, attached to the `offload` logger on first call."""
    global _installed
    with _install_lock:
        if _installed is None:
            _installed = FailureLog()
            logging.getLogger("offload").addFilter(_installed)
        return _installed
