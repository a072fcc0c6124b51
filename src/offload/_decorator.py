"""`@offload.task`: a function that still works when called, and gains .spawn/.run.

Typed with a ParamSpec, so a type checker checks `f(...)`, `f.spawn(...)` and
`f.run(...)` against the decorated function's own parameters; awaiting `f.spawn(...)`
gives what awaiting the function gives (an async function's result).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypeVar, overload

from ._controls import merge_controls
from ._engine import Lane, Task

if TYPE_CHECKING:
    import datetime

    from ._engine import LaneName, OnDuplicate
    from .durable import DurableLane, DurableTask

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
R_co = TypeVar("R_co", covariant=True)

_LANE_NAMES = ("loop", "background", "threads", "processes")


class TaskFunction(Generic[P, R_co]):
    """Wraps a function; `f(...)` calls it, `f.spawn(...)`/`f.run(...)` offload it."""

    def __init__(
        self,
        fn: Callable[P, R_co],
        lane: LaneName | None,
        name: str | None,
        controls: dict[str, Any] | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"@offload.task needs a callable, not {type(fn).__name__}")
        self.__wrapped__ = fn
        self._lane = lane
        self._name = name if name is not None else getattr(fn, "__qualname__", repr(fn))
        #: Task controls given to the decorator: defaults for every call.
        self._controls = dict(controls or {})
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co:
        return self.__wrapped__(*args, **kwargs)

    def _target(self) -> Lane:
        from . import _default

        return _default.options(name=self._name, lane=self._lane, **self._controls)

    @overload
    def spawn(
        self: TaskFunction[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs
    ) -> Task[T]: ...
    @overload
    def spawn(self: TaskFunction[P, T], *args: P.args, **kwargs: P.kwargs) -> Task[T]: ...
    def spawn(self, *args: Any, **kwargs: Any) -> Task[Any]:
        return self._target().spawn(self.__wrapped__, *args, **kwargs)

    @overload
    def run(
        self: TaskFunction[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs
    ) -> Task[T]: ...
    @overload
    def run(self: TaskFunction[P, T], *args: P.args, **kwargs: P.kwargs) -> Task[T]: ...
    def run(self, *args: Any, **kwargs: Any) -> Task[Any]:
        return self._target().run(self.__wrapped__, *args, **kwargs)

    def options(
        self, *, name: str | None = None, lane: LaneName | None = None, **controls: Any
    ) -> Lane:
        """A Lane with this function's defaults, overridden by these options (the same
        keywords as `offload.options`: timeout, retries, backoff, delay, key, ...)."""
        from . import _default

        return _default.options(
            name=self._name if name is None else name,
            lane=self._lane if lane is None else lane,
            **{**self._controls, **controls},
        )

    def __repr__(self) -> str:
        return f"<offload.task {self._name} lane={self._lane or 'auto'}>"


class DurableTaskFunction(Generic[P, R_co]):
    """`@offload.task(durable=True, ...)`: `f(...)` calls the function; `f.spawn(...)`
    persists the call in the durable store (offload.durable) and returns its handle."""

    def __init__(self, fn: Callable[P, R_co], name: str | None, controls: dict[str, Any]) -> None:
        if not callable(fn):
            raise TypeError(f"@offload.task needs a callable, not {type(fn).__name__}")
        self.__wrapped__ = fn
        self._name = name
        self._controls = dict(controls)
        functools.update_wrapper(self, fn)
        from .durable import _registry

        _registry.declare(f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', '?')}")

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co:
        return self.__wrapped__(*args, **kwargs)

    def options(self, **options: Any) -> DurableLane:
        """Durable spawns of this function with these options on top of the decorator's."""
        from . import _default

        return _default.durable.options(name=self._name, **{**self._controls, **options})

    @overload
    def spawn(
        self: DurableTaskFunction[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs
    ) -> DurableTask[T]: ...
    @overload
    def spawn(
        self: DurableTaskFunction[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> DurableTask[T]: ...
    def spawn(self, *args: Any, **kwargs: Any) -> DurableTask[Any]:
        return self.options().spawn(self, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<offload.task {self._name or self.__wrapped__.__qualname__} durable>"


@overload
def task(fn: Callable[P, R], /) -> TaskFunction[P, R]: ...
@overload
def task(
    fn: None = None,
    /,
    *,
    durable: Literal[True],
    name: str | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    backoff: Any = None,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] | None = None,
    delay: float | None = None,
    at: datetime.datetime | None = None,
    key: str | None = None,
    on_duplicate: OnDuplicate | None = None,
    sync_commit: bool | None = None,
) -> Callable[[Callable[P, R]], DurableTaskFunction[P, R]]: ...
@overload
def task(
    fn: None = None,
    /,
    *,
    durable: Literal[False] = False,
    lane: LaneName | None = None,
    name: str | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    backoff: Any = None,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] | None = None,
    delay: float | None = None,
    at: datetime.datetime | None = None,
    key: str | None = None,
    on_duplicate: OnDuplicate | None = None,
    limit_key: str | None = None,
    limit: int | None = None,
) -> Callable[[Callable[P, R]], TaskFunction[P, R]]: ...
def task(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    durable: bool = False,
    lane: LaneName | None = None,
    name: str | None = None,
    **controls: Any,
) -> Any:
    """Decorate a function: `@offload.task` or `@offload.task(lane="threads", name="x",
    timeout=30, retries=3)`; the controls are defaults for every call, which
    `f.options(...)` overrides. With `durable=True` (a module-level function), `f.spawn`
    persists the call in the durable store (offload.durable)."""
    if not isinstance(durable, bool):
        raise TypeError(f"durable must be a bool, not {type(durable).__name__}")
    if durable:
        return _durable_task(fn, lane, name, controls)
    if lane is not None and lane not in _LANE_NAMES:
        raise ValueError(f"lane must be one of {', '.join(_LANE_NAMES)} or None, got {lane!r}")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, not {type(name).__name__}")
    given = {k: v for k, v in controls.items() if v is not None}
    merge_controls({}, given)  # bad values fail at decoration, where they are written
    if fn is not None:
        return TaskFunction(fn, lane, name, given)

    def decorate(f: Callable[P, R]) -> TaskFunction[P, R]:
        return TaskFunction(f, lane, name, given)

    return decorate


def _durable_task(
    fn: Callable[..., Any] | None, lane: Any, name: str | None, controls: dict[str, Any]
) -> Any:
    if lane is not None:
        raise TypeError(
            "durable tasks take no lane=: a durable task runs on the lane its function gets"
            " (threads for a plain function, a loop for a coroutine function)"
        )
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, not {type(name).__name__}")
    given = {k: v for k, v in controls.items() if v is not None}
    from .durable._api import merge_options

    merge_options({}, given)  # bad values fail at decoration, where they are written
    if fn is not None:
        return DurableTaskFunction(fn, name, given)

    def decorate(f: Callable[P, R]) -> DurableTaskFunction[P, R]:
        return DurableTaskFunction(f, name, given)

    return decorate
