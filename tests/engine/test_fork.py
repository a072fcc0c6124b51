"""os.fork() after the runtime started: the child gets a fresh runtime that works on
every lane, and never deadlocks, even when the parent was busy spawning at the time.

Each scenario runs in its own interpreter (a fork of the pytest process would copy its
threads); there the parent waits for each child with a bounded polling loop and kills a
child that hangs."""

from __future__ import annotations

import json

from .support import run_python

PRELUDE = """
import asyncio, json, os, signal, sys, threading, time
import uvloop
import offload

FACTORY = {factory}
RUN = uvloop.run if FACTORY is uvloop.new_event_loop else asyncio.run

async def where(label):
    await asyncio.sleep(0)
    return label, threading.current_thread().name

def wait_child(pid, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return "hung"

def child_work(rt):
    # every lane, from code with no loop and from the child's own loops
    out = {{"submitted": sum(s["submitted"] for s in rt.stats().values())}}
    out["threads"] = rt.threads.spawn(lambda: "t").result(5)
    out["background"] = rt.background.spawn(where, "b").result(5)[0]
    out["loop-no-loop"] = rt.loop.spawn(where, "l").result(5)[0]
    out["spawn"] = rt.spawn(lambda: "s").result(5)

    async def on_loop():
        here = threading.current_thread().name
        label, there = await rt.loop.run(where, "loop")
        bg_label, bg_thread = await rt.background.run(where, "bg")
        return [label, there == here, await rt.run(lambda: "run"), bg_label, bg_thread != here]

    out["on-loop"] = RUN(on_loop())
    out["left"] = len(rt.close(5))
    return out

def fork_and_check(rt):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            print(json.dumps(child_work(rt)), flush=True)
            code = 0
        except BaseException as exc:
            print(json.dumps({{"error": repr(exc)}}), flush=True)
        finally:
            os._exit(code)
    return wait_child(pid)
"""

AFTER_START = """
rt = offload.Runtime(background_loops=2, loop_factory=FACTORY)
hold = threading.Event()
in_flight = [rt.threads.spawn(hold.wait, 30), rt.background.spawn(asyncio.sleep, 0.2, "slept")]
assert rt.threads.spawn(lambda: 1).result(5) == 1
assert rt.background.spawn(where, "warm").result(5)[0] == "warm"
status = fork_and_check(rt)
hold.set()
parent = [t.result(10) for t in in_flight] + [rt.threads.spawn(lambda: "after").result(5)]
print(json.dumps({{"status": status, "parent": parent, "left": len(rt.close(5))}}), flush=True)
"""

WHILE_BUSY = """
rt = offload.Runtime(threads=4, background_loops=2, loop_factory=FACTORY)
stop = threading.Event()

def producer(i):
    while not stop.is_set():
        tasks = [rt.threads.spawn(pow, i, 2) for _ in range(20)]
        tasks += [rt.background.spawn(where, i) for _ in range(20)]
        for t in tasks:
            t.result(10)

producers = [threading.Thread(target=producer, args=(i,)) for i in range(4)]
for t in producers:
    t.start()
time.sleep(0.05)
statuses = []
for _ in range(5):
    statuses.append(fork_and_check(rt))
    time.sleep(0.01)
stop.set()
for t in producers:
    t.join(20)
print(json.dumps({{"statuses": statuses, "alive": sum(t.is_alive() for t in producers),
                  "left": len(rt.close(5))}}), flush=True)
"""

FROM_THREADS = """
async def main():
    async with offload.Runtime(background_loops=2, loop_factory=FACTORY) as rt:
        assert (await rt.loop.run(where, "home"))[0] == "home"
        statuses = [await asyncio.to_thread(fork_and_check, rt)]
        statuses.append(await rt.threads.run(fork_and_check, rt))
        statuses.append(await rt.background.run(asyncio.to_thread, fork_and_check, rt))
        return statuses

print(json.dumps({{"statuses": RUN(main())}}), flush=True)
"""


def run_scenario(body: str, loop_kind: str) -> list[dict[str, object]]:
    factory = "uvloop.new_event_loop" if loop_kind == "uvloop" else "asyncio.new_event_loop"
    proc = run_python((PRELUDE + body).format(factory=factory), timeout=50)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


CHILD_OK = {
    "submitted": 0,
    "threads": "t",
    "background": "b",
    "loop-no-loop": "l",
    "spawn": "s",
    "on-loop": ["loop", True, "run", "bg", True],
    "left": 0,
}


def test_a_forked_child_gets_a_fresh_working_runtime_on_every_lane(loop_kind: str) -> None:
    """Forked while tasks are in flight: the child starts from zero and runs work on every
    lane; the parent's in-flight tasks finish and the parent keeps working."""
    child, parent = run_scenario(AFTER_START, loop_kind)
    assert child == CHILD_OK
    assert parent == {"status": 0, "parent": [True, "slept", "after"], "left": 0}


def test_forking_while_threads_spawn_never_deadlocks(loop_kind: str) -> None:
    """Five forks while four threads spawn and wait on two lanes: every child works and
    exits, none hangs, and the parent's producers finish."""
    *children, summary = run_scenario(WHILE_BUSY, loop_kind)
    assert summary == {"statuses": [0, 0, 0, 0, 0], "alive": 0, "left": 0}
    assert len(children) == 5
    for child in children:
        assert "error" not in child, child
        assert child["threads"] == "t" and child["background"] == "b" and child["left"] == 0


def test_forking_from_a_worker_thread_while_the_home_loop_runs(loop_kind: str) -> None:
    """A sync handler or pool task forks while the app's loop runs: in the child the
    parent's home loop is gone, so loop-lane work goes to a fresh background loop."""
    *children, summary = run_scenario(FROM_THREADS, loop_kind)
    assert summary == {"statuses": [0, 0, 0]}
    assert children == [CHILD_OK] * 3


CLOSED_BEFORE_FORK = """
import os, offload
rt = offload.Runtime()
rt.spawn(int).result(10)
rt.close(5)
pid = os.fork()
if pid == 0:
    code = 1
    try:
        rt.spawn(int)
    except offload.Closed:
        code = 0
    finally:
        os._exit(code)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""


def test_a_runtime_shut_down_before_fork_stays_shut_down_in_the_child() -> None:
    """Fork resets threads and locks, not the decision to stop: the child's copy of a
    closed runtime still refuses work with offload.Closed."""
    proc = run_python(CLOSED_BEFORE_FORK, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0", proc.stdout
