"""`inspect.signature` works on every public callable of `offload` and tells the truth.

Walks `offload.__all__`: the module functions, the classes and their public methods
(inherited ones too, so the C engine's methods under `Runtime`). For each: the signature
is found; a keyword it does not name is refused with TypeError naming it (unless it takes
**kwargs); one positional argument more than it allows is refused with TypeError (unless
it takes *args). The C methods are also called with every parameter their signature names,
by keyword, and accept them.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import offload

from .conftest import MakeRuntime

P = inspect.Parameter
BOGUS = "not_a_parameter_of_offload"
# Classes a user never instantiates (created by spawn/run, by the runtime).
NOT_INSTANTIABLE = {"Task", "Lane", "Schedule"}


def defined_by_offload(cls: type, attr: str) -> bool:
    """Whether offload defines cls.attr (not Python: BaseException.add_note, ...)."""
    owner = next(c for c in cls.__mro__ if attr in vars(c))
    return owner.__module__.split(".")[0] == "offload"


def public_callables() -> Iterator[tuple[str, Any]]:
    for name in offload.__all__:
        obj = getattr(offload, name)
        if inspect.isclass(obj):
            yield name, obj
            for attr in dir(obj):
                if (
                    not attr.startswith("_")
                    and callable(getattr(obj, attr))
                    and defined_by_offload(obj, attr)
                ):
                    yield f"{name}.{attr}", getattr(obj, attr)
        elif callable(obj):
            yield name, obj


ALL = dict(public_callables())
# What can be called: all but the classes a user never instantiates (their methods are).
CALLABLE = sorted(name for name in ALL if name not in NOT_INSTANTIABLE)


def test_the_walk_sees_the_c_methods() -> None:
    """The walk covers the engine's C methods (else the test below proves little)."""
    for name in (
        "Task.result",
        "Task.exception",
        "Task.done",
        "Task.cancel",
        "Task.cancelled",
        "Task.add_done_callback",
        "Task.remove_done_callback",
        "Lane.spawn",
        "Lane.run",
        "Lane.options",
        "Lane.stats",
        "Runtime.spawn",
        "Runtime.run",
        "Runtime.options",
        "Runtime.stats",
        "Runtime.start",
        "Runtime.background_loops",
        "Closed",
        "Full",
        "ProcessDied",
        "spawn",
        "run",
        "options",
        "stats",
    ):
        assert name in ALL, name


@pytest.mark.parametrize("name", sorted(ALL))
def test_signature_is_found(name: str) -> None:
    sig = inspect.signature(ALL[name])
    assert isinstance(sig, inspect.Signature)


def bound(name: str, rt: offload.Runtime, done: offload.Task[Any]) -> Callable[..., Any]:
    """The callable to call for `name`: methods bound to a real instance."""
    owner, _, method = name.partition(".")
    if not method:
        return ALL[name]  # type: ignore[no-any-return]
    instances: dict[str, Any] = {
        "Task": done,
        "Lane": rt.threads,
        "Runtime": rt,
        "TaskFunction": offload.task(lane="threads")(abs),
        "DurableTaskFunction": offload.task(durable=True)(abs),
        "loop_local": offload.loop_local(dict),
        "thread_local": offload.thread_local(dict),
        "TaskInfo": rt.get(done.id),
        "Backoff": offload.Backoff(),
        "Schedule": offload.every(3600, abs, -1, runtime=rt),
    }
    return getattr(instances[owner], method)  # type: ignore[no-any-return]


def call_refused(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> TypeError:
    with pytest.raises(TypeError) as info:
        res = fn(*args, **kwargs)
        if inspect.iscoroutine(res):  # pragma: no cover - only if binding did not fail
            res.close()
    return info.value


@pytest.mark.parametrize("name", CALLABLE)
def test_signature_matches_the_parameters(name: str, runtime: MakeRuntime) -> None:
    rt = runtime()
    done = rt.threads.spawn(abs, -1)
    assert done.result(timeout=30) == 1
    fn = bound(name, rt, done)
    params = list(inspect.signature(fn).parameters.values())
    kinds = {p.kind for p in params}
    if P.VAR_KEYWORD not in kinds:
        err = call_refused(fn, **{BOGUS: 1})
        assert BOGUS in str(err) or "takes no keyword arguments" in str(err), (name, err)
    if P.VAR_POSITIONAL not in kinds:
        positional = [p for p in params if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
        call_refused(fn, *[None] * (len(positional) + 1))


def test_c_methods_accept_the_parameters_their_signature_names(runtime: MakeRuntime) -> None:
    rt = runtime()
    done = rt.threads.spawn(abs, -2)
    for method in (done.result, done.exception):
        assert list(inspect.signature(method).parameters) == ["timeout"]
    assert done.result(timeout=None) == 2
    assert done.exception(timeout=None) is None
    for options in (rt.options, rt.threads.options):
        sig = inspect.signature(options)
        names = ("name", "lane", "timeout", "retries", "backoff", "retry_on", "delay", "at")
        names += ("key", "on_duplicate", "limit_key", "limit")
        assert [(p.name, p.kind) for p in sig.parameters.values()] == [
            (name, P.KEYWORD_ONLY) for name in names
        ]
        view = options(name="n", lane="threads")
        assert view.spawn(abs, -3).result(timeout=30) == 3
    assert list(inspect.signature(rt.start).parameters) == ["loop"]
    # Off the loop thread start() refuses for its own reason, not for its argument.
    with pytest.raises(RuntimeError, match="start\\(\\) must be called on the thread"):
        rt.start(loop=None)


def test_start_takes_its_loop_by_keyword(arun: Any, runtime: MakeRuntime) -> None:
    rt = runtime()

    async def main() -> None:
        rt.start(loop=asyncio.get_running_loop())
        assert await rt.run(abs, -4) == 4

    arun(main())


@pytest.mark.parametrize("name", ["Closed", "Full", "ProcessDied"])
def test_exceptions_take_a_message(name: str) -> None:
    exc_type = getattr(offload, name)
    assert str(inspect.signature(exc_type)) == "(*args)"
    assert str(exc_type("why")) == "why"


def test_hand_parsed_arguments_are_refused_as_cpython_refuses_them(runtime: MakeRuntime) -> None:
    """The METH_FASTCALL methods parse by hand: each misuse is a TypeError worded as
    CPython's own argument parser words it (the words these methods had before)."""
    rt = runtime()
    done = rt.threads.spawn(abs, -5)
    assert done.result(30) == 5
    for method in (done.result, done.exception):
        name = method.__name__
        with pytest.raises(TypeError, match=rf"{name}\(\) takes at most 1 argument \(2 given\)"):
            method(1, 2)
        with pytest.raises(TypeError, match=rf"{name}\(\) takes at most 1 argument \(2 given\)"):
            method(1, timeout=1)
        with pytest.raises(
            TypeError,
            match=rf"'deadline' is an invalid keyword argument for {name}\(\)"
            rf"|{name}\(\) got an unexpected keyword argument 'deadline'",
        ):
            method(deadline=1)
    # Runtime.start is Python (it also starts @offload.periodic schedules): Python's words
    with pytest.raises(
        TypeError, match=r"start\(\) takes from 1 to 2 positional arguments but 3 were given"
    ):
        rt.start(None, None)
    with pytest.raises(TypeError, match=r"options\(\) takes keyword arguments only"):
        rt.threads.options("n")
