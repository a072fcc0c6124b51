"""Task controls, the Python half: the values `options(...)` accepts for timeouts,
retries, backoff, delays, dedup keys and per-key limits are checked here, at the call
site, and handed to the engine as one immutable `Controls`; `offload.Backoff`,
`offload.Retry` and `offload.Duplicate` live here too. The engine
(`csrc/controls.c`, `csrc/timer.c`) does all the timing.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _engine

if TYPE_CHECKING:
    from ._engine import Task

__all__ = ["Backoff", "Duplicate", "Retry", "make_controls"]

_ON_DUPLICATE = ("join", "reject", "replace")
#: The largest retries= and limit= the engine holds (C int32 / Py_ssize_t).
MAX_RETRIES = 1_000_000
MAX_LIMIT = 2**31 - 1


def _number(where: str, value: Any, *, minimum: float, strict: bool = False) -> float:
    """A finite real number >= minimum (> minimum when strict), or a clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{where} must be a number of seconds, not {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{where} must be a finite number of seconds, not {number!r}")
    if number < minimum or (strict and number == minimum):
        relation = ">" if strict else ">="
        raise ValueError(f"{where} must be {relation} {minimum:g}, got {number!r}")
    return number


@dataclass(frozen=True)
class Backoff:
    """How long to wait before each retry: `initial * factor ** (attempt - 1)`, at most
    `max` seconds; with `jitter`, each wait is drawn uniformly from [wait/2, wait] so
    tasks that failed together don't retry together."""

    initial: float = 0.1
    factor: float = 2.0
    max: float = 60.0
    jitter: bool = True

    def __post_init__(self) -> None:
        _number("Backoff(initial=)", self.initial, minimum=0.0)
        factor = _number("Backoff(factor=)", self.factor, minimum=0.0)
        if factor < 1:
            raise ValueError(
                f"Backoff(factor=) must be >= 1 (each wait at least as long as the one"
                f" before), got {factor!r}; for a fixed delay pass backoff=<seconds>"
            )
        _number("Backoff(max=)", self.max, minimum=0.0)
        if not isinstance(self.jitter, bool):
            raise TypeError(f"Backoff(jitter=) must be a bool, not {type(self.jitter).__name__}")


class Retry(Exception):
    """Raise inside a task to ask for another attempt (it counts toward `retries`),
    after `delay` seconds if given, else after the task's backoff."""

    def __init__(self, delay: float | None = None, message: str = "retry requested") -> None:
        if delay is not None:
            delay = _number("Retry(delay=)", delay, minimum=0.0)
        super().__init__(message)
        self.delay = delay


class Duplicate(Exception):
    """A spawn with `key=` and `on_duplicate="reject"` while a task with that key is
    scheduled, pending, running or retrying; `.task` is that task."""

    def __init__(self, message: str, task: Task[Any]) -> None:
        super().__init__(message)
        self.task = task


def _set_timeout(spec: dict[str, Any], value: Any) -> None:
    spec["timeout"] = None if value is None else _number("timeout", value, minimum=0, strict=True)


def _set_retries(spec: dict[str, Any], value: Any) -> None:
    if value is None:
        value = 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"retries must be an int >= 0, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"retries must be >= 0 (the attempts after the first), got {value}")
    if value > MAX_RETRIES:
        raise ValueError(f"retries must be at most {MAX_RETRIES:,}, got {value}")
    spec["retries"] = int(value)


def _set_backoff(spec: dict[str, Any], value: Any) -> None:
    if value is None:
        value = Backoff()
    if not isinstance(value, Backoff):
        fixed = _number("backoff (a fixed delay)", value, minimum=0.0)
        value = Backoff(initial=fixed, factor=1.0, max=fixed, jitter=False)
    spec.update(
        backoff_initial=float(value.initial),
        backoff_factor=float(value.factor),
        backoff_max=float(value.max),
        backoff_jitter=1.0 if value.jitter else 0.0,
    )


def _set_retry_on(spec: dict[str, Any], value: Any) -> None:
    if value is None:
        spec.pop("retry_on", None)  # the default: Exception
        return
    types = value if isinstance(value, tuple) else (value,)
    if not types or not all(isinstance(t, type) and issubclass(t, BaseException) for t in types):
        raise TypeError(
            "retry_on must be an exception type or a non-empty tuple of them,"
            f" e.g. retry_on=(ConnectionError, TimeoutError); got {value!r}"
        )
    spec["retry_on"] = types


def _set_delay(spec: dict[str, Any], value: Any) -> None:
    spec["delay"] = None if value is None else _number("delay", value, minimum=0.0)
    if value is not None:
        spec.pop("at", None)


def _set_at(spec: dict[str, Any], value: Any) -> None:
    if value is None:
        spec.pop("at", None)
        return
    if not isinstance(value, _dt.datetime):
        raise TypeError(f"at= must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            "at= needs an aware datetime (with tzinfo), e.g."
            " datetime.now(timezone.utc) + timedelta(minutes=5); a naive one is ambiguous"
        )
    spec["at"] = value.timestamp()
    spec.pop("delay", None)


def _exact_str(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(
            f"{where} must be a str (e.g. 'user:42:refresh'), not {type(value).__name__}"
        )
    if not value:
        raise ValueError(f"{where} must be a non-empty str")
    return str.__str__(value)  # a str subclass's __eq__/__hash__ must not reach the engine


def _set_key(spec: dict[str, Any], value: Any) -> None:
    spec["key"] = None if value is None else _exact_str("key", value)


def _set_on_duplicate(spec: dict[str, Any], value: Any) -> None:
    if value is None:
        value = "join"
    if value not in _ON_DUPLICATE:
        raise ValueError(f"on_duplicate must be 'join', 'reject' or 'replace', not {value!r}")
    spec["on_duplicate"] = value


def _set_limit_key(spec: dict[str, Any], value: Any) -> None:
    spec["limit_key"] = None if value is None else _exact_str("limit_key", value)


def _set_limit(spec: dict[str, Any], value: Any) -> None:
    if value is None:
        spec["limit"] = None
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"limit must be an int >= 1, not {type(value).__name__}")
    if not 1 <= value <= MAX_LIMIT:
        raise ValueError(
            f"limit must be in 1..{MAX_LIMIT:,} (tasks with that limit_key at once), got {value}"
        )
    spec["limit"] = int(value)


_SETTERS = {
    "timeout": _set_timeout,
    "retries": _set_retries,
    "backoff": _set_backoff,
    "retry_on": _set_retry_on,
    "delay": _set_delay,
    "at": _set_at,
    "key": _set_key,
    "on_duplicate": _set_on_duplicate,
    "limit_key": _set_limit_key,
    "limit": _set_limit,
}

#: Every keyword options() takes besides name= and lane=.
CONTROL_NAMES = frozenset(_SETTERS)


def merge_controls(spec: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """`spec` updated with the `given` options, each checked; raises at the call site."""
    merged = dict(spec)
    for name, value in given.items():
        setter = _SETTERS.get(name)
        if setter is None:
            known = ", ".join(["name", "lane", *_SETTERS])
            raise TypeError(
                f"options() got an unexpected keyword argument {name!r} (known: {known})"
            )
        setter(merged, value)
    if (merged.get("limit") is not None) != (merged.get("limit_key") is not None):
        raise ValueError(
            "limit= and limit_key= go together: pass both, e.g. limit_key='tenant:7', limit=2"
        )
    return merged


def make_controls(base: _engine.Controls | None, given: dict[str, Any]) -> _engine.Controls:
    """The engine's controls factory: `base` (a view's controls) with `given` on top."""
    spec = merge_controls(base.spec if base is not None else {}, given)
    return _engine.Controls(spec)


_engine._install_controls(make_controls, Retry, Duplicate)
