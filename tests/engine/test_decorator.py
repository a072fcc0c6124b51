"""@offload.task(lane=None, name=None): the function stays an ordinary function and gains
.spawn() and .run() on the default runtime (exercised in a fresh interpreter, so this
process's default runtime is never touched)."""

from __future__ import annotations

import json

import offload

from .support import run_python


@offload.task
def add(a: int, b: int = 0) -> int:
    """Adds."""
    return a + b


@offload.task(lane="background", name="nightly")
async def nightly(x: int) -> int:
    return x * 2


def test_a_decorated_function_is_still_an_ordinary_function() -> None:
    """Called directly it runs inline, with its name, docstring and signature kept."""
    assert add(1, b=2) == 3
    assert (add.__name__, add.__doc__, add.__qualname__) == ("add", "Adds.", "add")
    assert add.__wrapped__(2) == 2
    assert isinstance(add, offload.TaskFunction)
    assert repr(add) == "<offload.task add lane=auto>"
    assert repr(nightly) == "<offload.task nightly lane=background>"


def test_a_decorated_async_function_still_returns_a_coroutine() -> None:
    """Calling a decorated async function gives its coroutine, as without the decorator."""
    coro = nightly(4)
    try:
        coro.send(None)
    except StopIteration as stop:
        assert stop.value == 8
    else:  # pragma: no cover - the coroutine never suspends
        raise AssertionError("nightly() suspended")


SCRIPT = """
import asyncio, json, threading
import uvloop
import offload

FACTORY = {factory}
offload.configure(loop_factory=FACTORY)
RUN = uvloop.run if FACTORY is uvloop.new_event_loop else asyncio.run

@offload.task
def add(a, b=0):
    return a + b, threading.get_ident()

@offload.task
async def where(x):
    return x, threading.get_ident()

@offload.task(lane="background", name="nightly-report")
async def report(day, name="kw"):
    return day, name, threading.current_thread().name

@offload.task(lane="threads")
def audit(entry, lane="kw"):
    return entry, lane

out = {{}}
out["direct"] = [add(1, 2)[0], RUN(report("d"))[:2]]
t = add.spawn(1, b=2)
out["spawn-sync"] = [t.lane, t.name, t.result(10)[0]]
t = report.spawn("mon", name="n")
out["spawn-named"] = [t.lane, t.name, t.result(10)]
t = audit.spawn("e", lane="l")
out["kwargs-pass-through"] = [t.lane, t.name, t.result(10)]

async def main():
    me = threading.get_ident()
    coro_value, coro_thread = await where.run(7)
    value, thread = await add.run(2, 3)
    task = where.spawn(8)
    return {{
        "run-sync": [value, thread != me],
        "run-async-on-callers-loop": [coro_value, coro_thread == me],
        "spawn-async": [task.lane, task.name, (await task)[0]],
        "run-background": await report.run("tue"),
    }}

out.update(RUN(main()))
print(json.dumps(out))
"""


def test_spawn_and_run_of_decorated_functions(loop_kind: str) -> None:
    """.spawn()/.run() use the decorator's lane (or pick one by target) and name, and pass
    every argument, including name=/lane= keywords, to the function."""
    factory = "uvloop.new_event_loop" if loop_kind == "uvloop" else "asyncio.new_event_loop"
    proc = run_python(SCRIPT.format(factory=factory))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "direct": [3, ["d", "kw"]],
        "spawn-sync": ["threads", "add", 3],
        "spawn-named": ["background", "nightly-report", ["mon", "n", "offload-background-0"]],
        "kwargs-pass-through": ["threads", "audit", ["e", "l"]],
        "run-sync": [5, True],
        "run-async-on-callers-loop": [7, True],
        "spawn-async": ["loop", "where", 8],
        "run-background": ["tue", "kw", "offload-background-0"],
    }
    assert proc.stderr == ""
