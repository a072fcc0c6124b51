"""Validation of Runtime options: every bad value is refused here, at the call site."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from typing import Any

LANES = ("loop", "background", "threads", "processes")
ON_FULL = ("reject", "drop", "block")

_LANE_KEYS = ("max_pending", "max_running", "on_full")

#: The largest value of each count the engine can hold (C: Py_ssize_t, its thread and
#: loop arrays); a larger one is refused here with the option's name, not overflowed.
MAX_THREADS = 4096
MAX_BACKGROUND_LOOPS = 256
MAX_PROCESSES = 1024
MAX_LIMIT = sys.maxsize - 1  # sys.maxsize itself means "unbounded" inside the engine

DEFAULTS: dict[str, Any] = {
    "threads": 32,
    "min_threads": 0,
    "idle_timeout": 30.0,
    "background_loops": 1,
    "processes": None,
    "max_pending": None,
    "max_running": None,
    "on_full": "reject",
    "error_handler": None,
    "shutdown_timeout": 10.0,
    "loop_factory": None,
    "lanes": None,
    "keep_finished": 1000,
    "keep_finished_ttl": None,
    # durable tasks (offload.durable; docs/durable.md)
    "store": None,
    "durable_concurrency": 32,
    "lease": 30.0,
    "result_ttl": 3600.0,
    "durability": "normal",
    "serializer": "msgpack",
    "signing_key": None,
    "sync_commit": False,
}

#: The options of the durable tier, which the engine itself never sees.
DURABLE_KEYS = (
    "store",
    "durable_concurrency",
    "lease",
    "result_ttl",
    "durability",
    "serializer",
    "signing_key",
    "sync_commit",
)


def _check_limit(
    where: str, value: Any, *, allow_zero: bool = False, most: int = MAX_LIMIT
) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where} must be an int or None, not {type(value).__name__}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{where} must be {'>= 0' if allow_zero else '> 0'} or None, got {value}")
    if value > most:
        raise ValueError(
            f"{where} must be in {0 if allow_zero else 1}..{most} or None, got {value}"
        )
    return int(value)


def _check_on_full(where: str, value: Any) -> str:
    if value not in ON_FULL:
        raise ValueError(f"{where} must be one of {', '.join(map(repr, ON_FULL))}, got {value!r}")
    return str(value)


def _check_seconds(where: str, value: Any, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{where} must be a number of seconds, not {type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:  # an int beyond any float: as good as forever
        seconds = math.inf
    if math.isnan(seconds):
        raise ValueError(f"{where} must be a number of seconds >= 0, not nan")
    if seconds < 0:
        raise ValueError(f"{where} must be >= 0 seconds, got {value}")
    return seconds


def validate(options: Mapping[str, Any]) -> dict[str, Any]:
    """Return a complete, checked option dict; raise TypeError/ValueError on bad input."""
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise TypeError(
            f"unknown Runtime option(s): {', '.join(unknown)}; known options: {', '.join(DEFAULTS)}"
        )
    out = dict(DEFAULTS)
    out.update(options)
    threads = _check_limit("threads", out["threads"], most=MAX_THREADS)
    if threads is None:
        raise TypeError("threads must be a positive int")
    out["min_threads"] = (
        _check_limit("min_threads", out["min_threads"], allow_zero=True, most=MAX_THREADS) or 0
    )
    if out["min_threads"] > threads:
        raise ValueError(f"min_threads ({out['min_threads']}) must not exceed threads ({threads})")
    out["idle_timeout"] = _check_seconds("idle_timeout", out["idle_timeout"])
    loops = _check_limit("background_loops", out["background_loops"], most=MAX_BACKGROUND_LOOPS)
    if loops is None:
        raise TypeError("background_loops must be a positive int")
    _check_limit("processes", out["processes"], most=MAX_PROCESSES)
    _check_limit("max_pending", out["max_pending"], allow_zero=True)
    _check_limit("max_running", out["max_running"])
    _check_on_full("on_full", out["on_full"])
    out["shutdown_timeout"] = _check_seconds("shutdown_timeout", out["shutdown_timeout"])
    out["keep_finished"] = (
        _check_limit("keep_finished", out["keep_finished"], allow_zero=True, most=10_000_000) or 0
    )
    out["keep_finished_ttl"] = _check_seconds(
        "keep_finished_ttl", out["keep_finished_ttl"], allow_none=True
    )
    for key in ("error_handler", "loop_factory"):
        if out[key] is not None and not callable(out[key]):
            raise TypeError(f"{key} must be callable or None, not {type(out[key]).__name__}")
    out["lanes"] = _validate_lanes(out["lanes"], out)
    from .durable._api import validate_durable

    validate_durable(out)
    return out


def _validate_lanes(lanes: Any, top: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-lane limits: the top-level values, overridden by `lanes={"threads": {...}}`."""
    if lanes is None:
        lanes = {}
    if not isinstance(lanes, Mapping):
        raise TypeError(
            f"lanes must be a mapping of lane name to options, not {type(lanes).__name__}"
        )
    resolved: dict[str, dict[str, Any]] = {}
    for name in LANES:
        resolved[name] = {key: top[key] for key in _LANE_KEYS}
    for name, override in lanes.items():
        if name not in LANES:
            raise ValueError(f"unknown lane {name!r} in lanes; lanes are {', '.join(LANES)}")
        if not isinstance(override, Mapping):
            raise TypeError(f"lanes[{name!r}] must be a mapping, not {type(override).__name__}")
        bad = sorted(set(override) - set(_LANE_KEYS))
        if bad:
            raise TypeError(
                f"unknown option(s) in lanes[{name!r}]: {', '.join(bad)};"
                f" per-lane options are {', '.join(_LANE_KEYS)}"
            )
        resolved[name].update(override)
    for name, lane in resolved.items():
        _check_limit(f"lanes[{name!r}]['max_pending']", lane["max_pending"], allow_zero=True)
        _check_limit(f"lanes[{name!r}]['max_running']", lane["max_running"])
        _check_on_full(f"lanes[{name!r}]['on_full']", lane["on_full"])
    return resolved


def safe_repr(obj: object) -> str:
    """repr(obj) for an error message; a user's __repr__ that raises must not replace
    the error being reported."""
    try:
        return repr(obj)
    except Exception:  # noqa: BLE001 (any failure of user code: describe by type)
        return f"<{type(obj).__qualname__} object (its repr() failed)>"


ErrorHandler = Callable[[Any, BaseException], object]
