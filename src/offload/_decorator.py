"""`@offload.task`: a function that still works when called, and gains .spawn/.run."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ._engine import Lane, Task

R = TypeVar("R")

_LANE_NAMES = ("loop", "background", "threads", "processes")


class TaskFunction(Generic[R]):
    """Wraps a function; `f(...)` calls it, `f.spawn(...)`/`f.run(...)` offload it."""

    def __init__(self, fn: Callable[..., R], lane: str | None, name: str | None) -> None:
        if not callable(fn):
            raise TypeError(f"@offload.task needs a callable, not {type(fn).__name__}")
        self.__wrapped__ = fn
        self._lane = lane
        self._name = name if name is not None else getattr(fn, "__qualname__", repr(fn))
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        return self.__wrapped__(*args, **kwargs)

    def _target(self) -> Lane:
        from . import _default

        return _default.options(name=self._name, lane=self._lane)

    def spawn(self, *args: Any, **kwargs: Any) -> Task[Any]:
        return self._target().spawn(self.__wrapped__, *args, **kwargs)

    def run(self, *args: Any, **kwargs: Any) -> Task[Any]:
        return self._target().run(self.__wrapped__, *args, **kwargs)

    def options(self, *, name: str | None = None, lane: str | None = None) -> Lane:
        from . import _default

        return _default.options(
            name=self._name if name is None else name, lane=self._lane if lane is None else lane
        )

    def __repr__(self) -> str:
        return f"<offload.task {self._name} lane={self._lane or 'auto'}>"


def task(
    fn: Callable[..., R] | None = None, *, lane: str | None = None, name: str | None = None
) -> Any:
    """Decorate a function: `@offload.task` or `@offload.task(lane="threads", name="x")`."""
    if lane is not None and lane not in _LANE_NAMES:
        raise ValueError(f"lane must be one of {', '.join(_LANE_NAMES)} or None, got {lane!r}")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, not {type(name).__name__}")
    if fn is not None:
        return TaskFunction(fn, lane, name)
    return lambda f: TaskFunction(f, lane, name)
