"""The module-level API on the process-wide default runtime: offload.spawn / run /
threads / background / loop / options / stats / drain / shutdown, and configure().

Every test runs in a fresh interpreter, so this process's default runtime is never
started or configured by the suite."""

from __future__ import annotations

import json

from .support import run_python

PRELUDE = """
import asyncio, json, threading
import uvloop
import offload

FACTORY = {factory}
RUN = uvloop.run if FACTORY is uvloop.new_event_loop else asyncio.run

def sync_where(*args, **kwargs):
    return threading.get_ident()

async def coro_where():
    await asyncio.sleep(0)
    return threading.get_ident()
"""

CALLERS = """
offload.configure(loop_factory=FACTORY)
main_thread = threading.get_ident()
out = {{}}

# code with no loop anywhere
sync, coro = offload.spawn(sync_where), offload.spawn(coro_where)
out["no loop"] = [sync.lane, coro.lane, sync.result(5) != main_thread, coro.result(5) != main_thread]

# a plain thread
box = []
thread = threading.Thread(target=lambda: box.extend([offload.spawn(sync_where), offload.spawn(coro_where())]))
thread.start()
thread.join(10)
out["plain thread"] = [box[0].lane, box[1].lane, box[0].result(5) != box[1].result(5)]

async def handler():
    me = threading.get_ident()
    coro = offload.spawn(coro_where)
    sync = offload.spawn(sync_where, name="kw")
    result = {{
        "async handler": [coro.lane, await coro == me, sync.lane, await sync != me],
        "run": [await offload.run(sync_where) != me, await offload.run(coro_where) == me],
    }}
    # a sync function in a worker thread: no home loop yet, then the app's loop is home
    before = await asyncio.to_thread(offload.spawn, coro_where)
    offload.default_runtime().start()
    after = await asyncio.to_thread(offload.spawn, coro_where)
    result["sync in a thread"] = [before.lane, await before != me, after.lane, await after == me]
    return result

out.update(RUN(handler()))

async def finish():
    me = threading.get_ident()
    lanes = [
        (await offload.loop.spawn(coro_where)) == me,
        (await offload.background.spawn(coro_where)) != me,
        (await offload.threads.run(sync_where)) != me,
    ]
    named = offload.options(name="custom").spawn(sync_where, name="kw")
    await named
    left = await offload.drain(5)
    stats = offload.stats()
    submitted = {{lane: stats[lane]["submitted"] for lane in ("loop", "background", "threads")}}
    unfinished = await offload.shutdown(5)
    try:
        offload.spawn(sync_where)
        closed = False
    except offload.Closed:
        closed = True
    return {{"lanes": lanes, "named": named.name, "drain": len(left), "submitted": submitted,
             "shutdown": len(unfinished), "closed": closed}}

out.update(RUN(finish()))
print(json.dumps(out))
"""


def run_scenario(body: str, loop_kind: str) -> dict[str, object]:
    factory = "uvloop.new_event_loop" if loop_kind == "uvloop" else "asyncio.new_event_loop"
    proc = run_python((PRELUDE + body).format(factory=factory))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def test_module_level_spawn_from_every_kind_of_caller(loop_kind: str) -> None:
    """offload.spawn from code with no loop, a plain thread, an async handler and a sync
    function in a thread; offload.run; the module's lanes, options, stats, drain and
    shutdown (after which spawn raises Closed)."""
    assert run_scenario(CALLERS, loop_kind) == {
        "no loop": ["threads", "background", True, True],
        "plain thread": ["threads", "background", True],
        "async handler": ["loop", True, "threads", True],
        "run": [True, True],
        "sync in a thread": ["background", True, "loop", True],
        "lanes": [True, True, True],
        "named": "custom",
        "drain": 0,
        "submitted": {"loop": 4, "background": 4, "threads": 6},
        "shutdown": 0,
        "closed": True,
    }


CONFIGURE = """
offload.configure(threads=3, loop_factory=FACTORY)
offload.configure(max_pending=7, lanes={{"threads": {{"max_running": 2}}}})  # merged

def limits():
    s = offload.stats()
    return [s["threads"]["max_running"], s["threads"]["max_pending"],
            s["threads"]["threads"]["max"], s["loop"]["max_pending"]]

out = {{"before": limits(), "started": offload.default_runtime().started}}

async def first_use():
    return await offload.spawn(asyncio.sleep(0, "used"))

out["first use"] = RUN(first_use())
try:
    offload.configure(threads=9, max_pending=1)
    out["after"] = "accepted"
except RuntimeError as exc:
    out["after"] = str(exc)
out["unchanged"] = limits()
print(json.dumps(out))
"""


def test_configure_applies_before_first_use_and_is_refused_after(loop_kind: str) -> None:
    """configure() calls before first use merge and take effect; after the first spawn
    configure() raises a clear RuntimeError and the options stay as they were."""
    out = run_scenario(CONFIGURE, loop_kind)
    assert out["before"] == [2, 7, 2, 7]
    assert out["started"] is False
    assert out["first use"] == "used"
    assert isinstance(out["after"], str)
    assert "must be called before the runtime is first used" in out["after"]
    assert "offload.Runtime(" in out["after"]
    assert out["unchanged"] == [2, 7, 2, 7]


AT_EXIT = """
offload.configure(shutdown_timeout=1, loop_factory=FACTORY)
stuck = threading.Event()
offload.threads.options(name="stuck-in-default").spawn(stuck.wait)

async def sleepy():
    await asyncio.sleep(3600)

offload.background.options(name="sleepy-in-default").spawn(sleepy)
print("main done", flush=True)
"""


def test_the_default_runtime_is_shut_down_at_interpreter_exit(loop_kind: str) -> None:
    """Never shut down explicitly, the default runtime is shut down at exit within its
    shutdown_timeout, naming what did not finish."""
    factory = "uvloop.new_event_loop" if loop_kind == "uvloop" else "asyncio.new_event_loop"
    proc = run_python((PRELUDE + AT_EXIT).format(factory=factory), timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "main done"
    for name in ("stuck-in-default", "sleepy-in-default"):
        assert any(name in line and "did not finish" in line for line in proc.stderr.splitlines())
    assert "Traceback" not in proc.stderr


def test_module_functions_and_lanes_follow_a_renewed_default_runtime() -> None:
    """What `from offload import ...` and module-level option views bound keep working
    after the default runtime is shut down and renewed (an app's lifespan starting again),
    and they are C methods: no Python frame on the spawn path."""
    proc = run_python(
        """
        import asyncio, types, offload
        from offload import spawn, run, threads, background, options

        audit = offload.threads.options(name="audit")
        assert isinstance(threads, offload.Lane) and threads.name == "threads"
        assert isinstance(spawn, types.BuiltinMethodType), type(spawn)
        first = offload.default_runtime()
        assert spawn(sum, [1, 2]).result(10) == 3
        asyncio.run(offload.shutdown(10))
        try:
            spawn(sum, [1])
        except offload.Closed:
            pass
        else:
            raise AssertionError("a shut-down default runtime took work")
        second = offload._renew_default_runtime()
        assert second is offload.default_runtime() and second is not first
        assert spawn(sum, [1, 2]).result(10) == 3
        assert threads.spawn(sum, [3]).result(10) == 3
        task = audit.spawn(sum, [4])
        assert (task.name, task.result(10)) == ("audit", 4)
        assert options(name="x").spawn(sum, [5]).result(10) == 5

        async def twice(x):
            return 2 * x

        async def main():
            assert await run(twice, 21) == 42
            assert await background.run(twice, 2) == 4
            await offload.shutdown(10)

        asyncio.run(main())
        assert second.stats()["threads"]["succeeded"] == 4
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
