"""The durable tier across real processes (issue 13, "Tests that must exist"):
`python -m offload worker` subprocesses on one store, killed with SIGKILL or stopped
with SIGTERM at the worst moments. Each test runs on both stores: SQLite (a file in
the test's tmp_path) and Redis (a queue of its own on the session's redis-server).

* kill -9 of a worker mid-run, 5,000 tasks over 3 workers: every task succeeds,
  each idempotency key has exactly one effect, the killed worker's tasks ran again,
  reclaimed within the lease.
* kill -9 of a producer right after `persisted()` returned: the task still runs.
* SIGTERM of a worker running 1,000 tasks: it exits 0 at once, releases them, another
  worker finishes them all, none waits for a lease (attempts not counted).
* A worker whose loop is blocked for 3x the lease keeps its lease: the task runs once.
* A poison task that kills its worker every attempt ends dead-lettered after
  retries + 1 attempts, shown by `python -m offload dlq list`.
* A worker paused (SIGSTOP) past its lease cannot ack over the worker that took its
  tasks over (the fenced ack).

The tasks are in proc_tasks.py, the process helpers in procs_support.py. Bounds on
time are generous ("did not wait for a lease"), never benchmarks.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import redis
from redis_server import RedisServer

import offload

from . import proc_tasks
from .conftest import redis_url_for, sqlite_url_for
from .procs_support import Effects, Processes, StoreView, import_root, run_cli, wait_for

#: Every test here starts real worker processes: they run once, in `make test` (3.11),
#: not in each matrix leg nor under ASan (each subprocess would preload libasan).
pytestmark = pytest.mark.durable_heavy

MODULE = proc_tasks.__name__
LOOPS = ["asyncio", "uvloop"]
STORES = ["sqlite", "redis"]


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    """Starts processes; SIGKILLs and reaps every one still alive at teardown."""
    processes = Processes(tmp_path, import_root(MODULE, proc_tasks.__file__))
    try:
        yield processes
    finally:
        processes.kill_all()


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, StoreView]]:
    """The store's URL ("sqlite": a file in tmp_path; "redis": a queue of its own on the
    session's redis-server) and a view of it."""
    if request.param == "redis":
        url = redis_url_for(request.getfixturevalue("redis_server"))
    else:
        url = sqlite_url_for(tmp_path / "store.db")
    view = StoreView(url)
    try:
        yield url, view
    finally:
        view.close()


@pytest.fixture
def effects(tmp_path: Path) -> tuple[str, Effects]:
    path = tmp_path / "effects.db"
    proc_tasks.create(str(path))
    return str(path), Effects(path)


def produce(
    url: str, calls: list[tuple[object, tuple[object, ...]]], **options: object
) -> list[str]:
    """Spawn `calls` from a producer-only runtime in this process; their ids once
    committed."""
    rt = offload.Runtime(store=url, durable_concurrency=0)
    try:
        lane = rt.durable.options(**options) if options else rt.durable
        handles = [lane.spawn(fn, *args) for fn, args in calls]  # type: ignore[arg-type]
        rt.durable.flush_sync(60)
        return [h.id for h in handles]
    finally:
        rt.close(10)


def _diagnose(procs: Processes, view: StoreView) -> str:
    return f"store: {view.by_state()}\n{procs.logs()}"


# -- 1. kill -9 of a worker mid-run ------------------------------------------------------
@pytest.mark.parametrize("kind", ["sync-asyncio", "async-uvloop"])
def test_kill9_worker_mid_run_every_task_once_effect(
    procs: Processes, store: tuple[str, StoreView], effects: tuple[str, Effects], kind: str
) -> None:
    """Sync tasks (the workers' threads lane), or coroutines on uvloop workers."""
    fn = proc_tasks.work if kind.startswith("sync") else proc_tasks.asleep
    loop = kind.split("-")[1]
    url, view = store
    epath, fx = effects
    n, lease = 5000, 1.0
    keys = [f"k{i}" for i in range(n)]
    # A crash counts as an attempt: retries=3 lets the killed worker's tasks run again.
    ids = produce(url, [(fn, (epath, k, 0.003)) for k in keys], retries=3)
    key_of = dict(zip(ids, keys))
    workers = [
        procs.worker(url, MODULE, f"worker{i}", lease=lease, concurrency=16, threads=16, loop=loop)
        for i in range(3)
    ]
    victim = workers[0]

    def victim_mid_run() -> bool:
        states = view.by_state()
        return states.get("succeeded", 0) >= 300 and len(view.running_of(victim.pid)) >= 4

    wait_for("the first worker to hold running tasks with some done", victim_mid_run, 60)
    killed_at = time.time()
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(10) == -signal.SIGKILL
    held = view.running_of(victim.pid)  # it can change nothing any more
    assert held, "the killed worker held no lease"
    done_before = view.by_state().get("succeeded", 0)
    assert done_before < n, "every task was done before the kill: nothing was mid-run"

    def all_succeeded() -> bool:
        states = view.by_state()
        assert set(states) <= {"queued", "running", "succeeded"}, _diagnose(procs, view)
        return states.get("succeeded", 0) == n

    wait_for(
        "every task to succeed",
        all_succeeded,
        90,
        every=0.05,
        detail=lambda: _diagnose(procs, view),
    )
    tasks = view.tasks()
    assert {state for state, _, _ in tasks.values()} == {"succeeded"}, _diagnose(procs, view)
    # Each idempotency key has exactly one effect, whatever the number of runs.
    counts = fx.effects()
    assert set(counts) == set(keys)
    assert set(counts.values()) == {1}
    runs = fx.runs()
    runs_per_key: dict[str, int] = {}
    for key, _, _ in runs:
        runs_per_key[key] = runs_per_key.get(key, 0) + 1
    assert set(runs_per_key) == set(keys)
    # The killed worker's in-flight tasks were reclaimed and ran again elsewhere.
    # (whether any of them had begun its effect before the kill is up to timing)
    assert all(tasks[i][1] >= 2 for i in held), {i: tasks[i] for i in held}
    held_keys = {key_of[i] for i in held}
    reruns = [t for key, pid, t in runs if key in held_keys and pid != victim.pid]
    assert reruns, "no task the killed worker held ran again"
    reclaim = min(reruns) - killed_at
    twice = sum(1 for c in runs_per_key.values() if c >= 2)
    print(
        f"\n[{kind}] kill -9 with {n - done_before} tasks left, {len(held)} held by the killed worker:"
        f" first re-run {reclaim:.3f} s after the kill (lease {lease:g} s);"
        f" {twice} keys ran twice or more, {len(runs)} runs in all"
    )
    assert 0 < reclaim <= lease + 2.0
    for w in workers[1:]:
        assert w.poll() is None, procs.logs()


# -- 2. kill -9 of the producer right after persisted() ---------------------------------
PRODUCERS = {
    # an app on a loop: spawn, then await persisted()
    "persisted": """
import asyncio, os, signal, sys, time
import offload
import {module} as tasks
N = {n}

async def main():
    rt = offload.Runtime(store=sys.argv[1], durable_concurrency=0)
    handles = [rt.durable.spawn(tasks.work, sys.argv[2], f"k{{i}}", 0.0) for i in range(N)]
    for handle in handles:
        await handle.persisted()
    print("persisted", *[h.id for h in handles], flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # at once: no shutdown, no close
    time.sleep(60)  # (or the test's SIGKILL, as soon as it reads the line)

asyncio.run(main())
""",
    # a thread-side spawn with sync_commit=True: returns once committed
    "sync_commit": """
import os, signal, sys, time
import offload
import {module} as tasks
N = {n}

rt = offload.Runtime(store=sys.argv[1], durable_concurrency=0)
lane = rt.durable.options(sync_commit=True)
handles = [lane.spawn(tasks.work, sys.argv[2], f"k{{i}}", 0.0) for i in range(N)]
print("persisted", *[h.id for h in handles], flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # at once: no shutdown, no close
time.sleep(60)  # (or the test's SIGKILL, as soon as it reads the line)
""",
}


@pytest.mark.parametrize("commit", sorted(PRODUCERS))
def test_kill9_producer_after_persisted_task_runs(
    procs: Processes, store: tuple[str, StoreView], effects: tuple[str, Effects], commit: str
) -> None:
    url, view = store
    epath, fx = effects
    n = 300  # a batch: a persisted() that returned before the commit would lose some
    producer = subprocess.Popen(
        [sys.executable, "-c", PRODUCERS[commit].format(module=MODULE, n=n), url, epath],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=procs.env,
        cwd=procs.tmp,
    )
    try:
        assert producer.stdout is not None
        line = producer.stdout.readline().decode()  # the producer is bounded by its sleep
        producer.send_signal(signal.SIGKILL)
        assert producer.wait(30) == -signal.SIGKILL
        out = producer.stdout.read().decode()
    finally:
        if producer.poll() is None:
            producer.kill()
            producer.wait(30)
        if producer.stdout is not None:
            producer.stdout.close()
    assert line.startswith("persisted "), line + out
    task_ids = line.split()[1:]
    assert len(task_ids) == n
    tasks = view.tasks()
    missing = [i for i in task_ids if tasks.get(i, ("missing",))[0] != "queued"]
    assert not missing, f"{len(missing)} persisted tasks are not in the store"

    procs.worker(url, MODULE, "worker", lease=2.0)
    wait_for(
        "the tasks to succeed",
        lambda: view.by_state().get("succeeded", 0) == n,
        30,
        detail=lambda: _diagnose(procs, view),
    )
    tasks = view.tasks()
    assert all(tasks[i] == ("succeeded", 1, None) for i in task_ids)
    keys = [f"k{i}" for i in range(n)]
    assert fx.effects() == dict.fromkeys(keys, 1)
    assert sorted(key for key, _, _ in fx.runs()) == sorted(keys)
    # Another process (this one) reads a task and its result from the store.
    rt = offload.Runtime(store=url, durable_concurrency=0)
    try:
        info = rt.durable.get(task_ids[-1])
    finally:
        rt.close(10)
    assert info is not None
    assert (info.state, info.attempt, info.result) == ("succeeded", 1, f"k{n - 1}")


# -- 3. SIGTERM of a worker with 1,000 running ------------------------------------------
@pytest.mark.parametrize("b_starts", ["before", "after"])
@pytest.mark.parametrize("loop", LOOPS)
def test_sigterm_with_1000_running_released_and_finished_elsewhere(
    procs: Processes,
    store: tuple[str, StoreView],
    effects: tuple[str, Effects],
    loop: str,
    b_starts: str,
) -> None:
    """Worker B is started after the SIGTERM, or before it (then it polls an empty
    queue until A's release shows up in the store)."""
    url, view = store
    epath, fx = effects
    n, lease = 1000, 30.0
    keys = [f"k{i}" for i in range(n)]
    ids = produce(url, [(proc_tasks.asleep, (epath, k, 4.0)) for k in keys])
    a = procs.worker(
        url, MODULE, "worker-a", lease=lease, concurrency=n, shutdown_timeout=0.5, loop=loop
    )
    wait_for(f"worker A to hold {n} leases", lambda: len(view.running_of(a.pid)) == n, 30)
    if b_starts == "before":
        b = procs.worker(url, MODULE, "worker-b", lease=lease, concurrency=n, loop=loop)
        assert len(view.running_of(a.pid)) == n
    termed_at = time.monotonic()
    a.send_signal(signal.SIGTERM)
    if b_starts == "after":
        b = procs.worker(
            url, MODULE, "worker-b", lease=lease, concurrency=n, loop=loop, ready=False
        )
    try:
        assert a.wait(15) == 0, procs.log_of(a)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"worker A did not exit on SIGTERM:\n{procs.logs()}") from None
    assert "stopping" in procs.log_of(a)
    assert not view.running_of(a.pid), "worker A exited still holding leases"

    wait_for(
        f"worker B to finish the {n} tasks",
        lambda: view.by_state().get("succeeded", 0) == n,
        60,
        every=0.05,
        detail=lambda: _diagnose(procs, view),
    )
    took = time.monotonic() - termed_at
    tasks = view.tasks()
    assert all(tasks[i] == ("succeeded", 1, None) for i in ids), _diagnose(procs, view)
    counts = fx.effects()
    assert set(counts) == set(keys) and set(counts.values()) == {1}
    finished_by = {pid for (pid,) in fx.query("SELECT DISTINCT pid FROM effects")}
    assert finished_by <= {a.pid, b.pid}
    started_by_a = sum(1 for _, pid, _ in fx.runs() if pid == a.pid)
    assert started_by_a > 0, "worker A never started a task: nothing was running"
    print(
        f"\n[{loop}, B {b_starts}] SIGTERM with {n} running ({started_by_a} started by A): all done"
        f" {took:.2f} s later (lease {lease:g} s);"
        f" {sum(1 for (pid,) in fx.query('SELECT pid FROM effects') if pid == b.pid)} finished by B"
    )
    assert took < 15.0, "the released tasks waited for their lease"
    assert b.poll() is None, procs.log_of(b)


# -- 4. a loop blocked for 3x the lease -------------------------------------------------
@pytest.mark.parametrize("loop", LOOPS)
def test_blocked_loop_keeps_its_lease_and_runs_once(
    procs: Processes, store: tuple[str, StoreView], effects: tuple[str, Effects], loop: str
) -> None:
    url, view = store
    epath, fx = effects
    lease = 1.0
    workers = [procs.worker(url, MODULE, f"worker{i}", lease=lease, loop=loop) for i in range(2)]
    (task_id,) = produce(url, [(proc_tasks.block_loop, (epath, "blocked", 3 * lease))])
    wait_for(
        "the blocking task to end",
        lambda: view.tasks()[task_id][0] in ("succeeded", "dead", "cancelled"),
        30,
        every=0.05,
    )
    assert view.tasks()[task_id] == ("succeeded", 1, None), _diagnose(procs, view)
    runs = fx.runs()
    assert [key for key, _, _ in runs] == ["blocked"], runs
    assert runs[0][1] in {w.pid for w in workers}
    assert fx.effects() == {"blocked": 1}
    for w in workers:
        assert w.poll() is None, procs.logs()


# -- 5. a poison task ---------------------------------------------------------------------
def test_poison_task_dead_lettered_after_retries_plus_one_attempts(
    procs: Processes, store: tuple[str, StoreView], effects: tuple[str, Effects]
) -> None:
    url, view = store
    epath, fx = effects
    retries, lease = 2, 1.0
    (task_id,) = produce(url, [(proc_tasks.kill_worker, (epath, "poison"))], retries=retries)
    restarts = 0
    worker = procs.worker(url, MODULE, "worker0", lease=lease, ready=False)
    deadline = time.monotonic() + 60
    while view.tasks()[task_id][0] != "dead":
        assert time.monotonic() < deadline, _diagnose(procs, view)
        if worker.poll() is not None:
            assert worker.returncode == -signal.SIGKILL, procs.log_of(worker)
            restarts += 1
            assert restarts <= 6, (
                f"still not dead-lettered after 6 restarts\n{_diagnose(procs, view)}"
            )
            worker = procs.worker(url, MODULE, f"worker{restarts}", lease=lease, ready=False)
        time.sleep(0.02)
    state, attempt, error_type = view.tasks()[task_id]
    assert (state, attempt, error_type) == ("dead", retries + 1, "WorkerLost")
    assert restarts == retries + 1
    runs = fx.runs()
    assert len(runs) == retries + 1 and len({pid for _, pid, _ in runs}) == retries + 1
    assert fx.effects() == {}

    listed = run_cli(procs, "dlq", "list", "--store", url)
    assert task_id in listed, listed
    dead = json.loads(run_cli(procs, "dlq", "list", "--json", "--store", url))
    (record,) = [d for d in dead if d["id"] == task_id]
    assert record["attempt"] == retries + 1
    assert record["error_type"] == "WorkerLost"
    status = json.loads(run_cli(procs, "status", "--json", "--store", url))
    assert status["by_state"]["dead"] == 1


# -- 6. a worker paused past its lease: the fenced ack ----------------------------------
def test_worker_paused_past_lease_cannot_ack_over_the_new_owner(
    procs: Processes, store: tuple[str, StoreView], effects: tuple[str, Effects]
) -> None:
    """SIGSTOP a worker holding tasks for longer than the lease: another worker
    reclaims and finishes them; once resumed, the first one's acks are refused (its
    lease is gone), so the store keeps the new owner's attempt and outcome."""
    url, view = store
    epath, fx = effects
    n, lease = 8, 1.0
    keys = [f"k{i}" for i in range(n)]
    ids = produce(url, [(proc_tasks.work, (epath, k, 1.5)) for k in keys], retries=3)
    a = procs.worker(url, MODULE, "worker-a", lease=lease, concurrency=n, threads=n)
    wait_for(f"worker A to hold {n} leases", lambda: len(view.running_of(a.pid)) == n, 30)
    wait_for("worker A to start them", lambda: len(fx.runs()) == n, 30)
    a.send_signal(signal.SIGSTOP)
    try:
        b = procs.worker(url, MODULE, "worker-b", lease=lease, concurrency=n, threads=n)
        wait_for(
            "worker B to finish the tasks A held",
            lambda: view.by_state().get("succeeded", 0) == n,
            30,
            every=0.05,
            detail=lambda: _diagnose(procs, view),
        )
    finally:
        a.send_signal(signal.SIGCONT)
    # A's attempts wake up, end, and try to ack: refused, the store is unchanged.
    wait_for(
        "worker A to report its refused acks",
        lambda: "were not written" in procs.log_of(a),
        30,
        detail=procs.logs,
    )
    tasks = view.tasks()
    assert all(tasks[i][:2] == ("succeeded", 2) for i in ids), tasks
    assert not view.owned()
    assert fx.effects() == dict.fromkeys(keys, 1)
    assert {pid for (pid,) in fx.query("SELECT pid FROM effects")} == {b.pid}
    runs = fx.runs()
    assert sorted(pid for _, pid, _ in runs) == sorted([a.pid] * n + [b.pid] * n)
    assert a.poll() is None and b.poll() is None, procs.logs()


# -- 6b. a worker that takes back the task its stale attempt still runs ------------------
def test_worker_claiming_back_its_own_reclaimed_task_keeps_the_new_lease(
    procs: Processes, store: tuple[str, StoreView], effects: tuple[str, Effects]
) -> None:
    """A worker's lease runs out while its attempt 1 still runs (a renewal came too
    late: a paused Redis, a clock step) and a reclaim requeues the task; the same
    worker, having room, claims it again: attempt 2 runs beside attempt 1 in one
    process. Attempt 1's ack is refused when it ends; attempt 2 must keep its lease
    (renewed) and succeed, not be reclaimed as if its worker were gone."""
    url, view = store
    epath, fx = effects
    lease = 1.0
    procs.worker(url, MODULE, "worker", lease=lease, concurrency=4, threads=4)
    # Attempt 1 ends first (2x the lease); attempt 2 runs on for 3x the lease after that.
    (task_id,) = produce(
        url, [(proc_tasks.work_longer_again, (epath, "k", 2 * lease, 5 * lease))], retries=1
    )
    wait_for("attempt 1 to start", lambda: len(fx.runs()) == 1, 30)
    # The reclaim another worker makes once the lease ran out, as if a little more than
    # a lease later (the task is due again then; SQLite requeues it at that time).
    assert view.reclaim_as_of(time.time() + 1.2 * lease) == (1, 0)
    wait_for("the worker to claim it back", lambda: len(fx.runs()) == 2, 30, detail=procs.logs)
    wait_for(
        "the task to end",
        lambda: view.tasks()[task_id][0] in ("succeeded", "dead"),
        30,
        every=0.05,
    )
    assert view.tasks()[task_id] == ("succeeded", 2, None), f"{view.get(task_id)}\n{procs.logs()}"
    assert len(fx.runs()) == 2
    assert fx.effects() == {"k": 1}


# == Redis only ==========================================================================
# Workers on many machines share one Redis: these tests kill workers and fault the
# Redis server itself. Each fault test runs its own redis-server (`own_redis`), never
# the session's.


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, AOF fsynced on every write (`appendfsync
    always`: a reply means the write is on disk), stopped at teardown."""
    server = RedisServer(tmp_path / "redis", appendfsync="always")
    try:
        yield server
    finally:
        server.stop()


def _refused_acks(procs: Processes, workers: list[subprocess.Popen[bytes]]) -> int:
    """How many outcomes the workers' logs say the fenced ack refused."""
    return sum(
        int(n)
        for w in workers
        for n in re.findall(r"(\d+) durable task outcomes were not written", procs.log_of(w))
    )


def _runs_per_key(fx: Effects) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key, _, _ in fx.runs():
        counts[key] = counts.get(key, 0) + 1
    return counts


# -- 7. 4 workers, 20,000 tasks, two killed ---------------------------------------------
def test_redis_20000_tasks_4_workers_kill9_two_mid_run(
    procs: Processes, redis_server: RedisServer, effects: tuple[str, Effects]
) -> None:
    """Every task succeeds, each idempotency key has exactly one effect, and the two
    killed workers' leases are reclaimed by the live ones within the lease."""
    url = redis_url_for(redis_server)
    view = StoreView(url)
    try:
        _kill9_two_of_four(procs, url, view, effects)
    finally:
        view.close()


def _kill9_two_of_four(
    procs: Processes, url: str, view: StoreView, effects: tuple[str, Effects]
) -> None:
    epath, fx = effects
    n, lease = 20_000, 1.0
    keys = [f"k{i}" for i in range(n)]
    ids = produce(url, [(proc_tasks.work, (epath, k, 0.002)) for k in keys], retries=3)
    key_of = dict(zip(ids, keys))
    workers = [
        procs.worker(
            url, MODULE, f"worker{i}", lease=lease, concurrency=16, threads=16, loop=LOOPS[i % 2]
        )
        for i in range(4)
    ]
    victims, survivors = workers[:2], workers[2:]

    def victims_mid_run() -> bool:
        if view.by_state().get("succeeded", 0) < 2000:
            return False
        return all(len(view.running_of(v.pid)) >= 2 for v in victims)

    wait_for("the first two workers to hold running tasks", victims_mid_run, 90, every=0.02)
    for v in victims:
        v.send_signal(signal.SIGKILL)
    killed_at = time.time()
    for v in victims:
        assert v.wait(10) == -signal.SIGKILL
    held = [i for v in victims for i in view.running_of(v.pid)]
    assert held, "the killed workers held no lease"
    done_before = view.by_state().get("succeeded", 0)
    assert done_before < n, "every task was done before the kill: nothing was mid-run"
    dead_owners = tuple(f"{v.pid}-" for v in victims)

    def reclaimed() -> bool:
        for task_id in held:
            record = view.get(task_id)
            assert record is not None, task_id
            if (record.owner or "").startswith(dead_owners):
                return False
        return True

    wait_for("the killed workers' leases to be reclaimed", reclaimed, 30, every=0.02)
    reclaim = time.time() - killed_at

    def all_succeeded() -> bool:
        states = view.by_state()
        assert set(states) <= {"queued", "running", "succeeded"}, _diagnose(procs, view)
        return states.get("succeeded", 0) == n

    wait_for(
        "every task to succeed",
        all_succeeded,
        120,
        every=0.1,
        detail=lambda: _diagnose(procs, view),
    )
    finished = time.time() - killed_at
    tasks = view.tasks()
    assert len(tasks) == n and {s for s, _, _ in tasks.values()} == {"succeeded"}
    assert fx.effects() == dict.fromkeys(keys, 1)
    runs_per_key = _runs_per_key(fx)
    assert set(runs_per_key) == set(keys)
    # The killed workers' tasks ran again, on a live worker, at a later attempt.
    assert all(tasks[i][1] >= 2 for i in held), {i: tasks[i] for i in held}
    held_keys = {key_of[i] for i in held}
    live = {w.pid for w in survivors}
    rerun = {key for key, pid, t in fx.runs() if key in held_keys and pid in live}
    assert rerun == held_keys
    twice = sum(1 for c in runs_per_key.values() if c >= 2)
    print(
        f"\n[redis] 4 workers, {n} tasks, kill -9 of two with {n - done_before} left and"
        f" {len(held)} held: reclaimed {reclaim:.2f} s after the kill (lease {lease:g} s),"
        f" all done {finished:.1f} s after; {twice} keys ran twice or more"
    )
    # A lease runs out `lease` after its last renewal; a live worker reclaims every
    # lease/4: generous bounds, the machine is shared.
    assert reclaim <= lease + 3.0
    for w in survivors:
        assert w.poll() is None, procs.logs()


# -- 8. redis-server SIGKILLed and restarted mid-run ------------------------------------
STORE_THREAD_DIED = "the durable store thread failed"

# The store thread decides whether to claim (`_claim_due`) before its group's try:
# on Redis that decision asks `store.changed()`, a network call, so a StoreBusy there
# (Redis unreachable) escapes and kills the store thread of a worker with room.

PACED_PRODUCER = """
import asyncio, sys, time
import offload
import {module} as tasks
N, BATCH = {n}, {batch}

async def main():
    rt = offload.Runtime(store=sys.argv[1], durable_concurrency=0)
    try:
        for start in range(0, N, BATCH):
            handles = [
                rt.durable.spawn(tasks.work, sys.argv[2], f"k{{i}}", 0.01)
                for i in range(start, start + BATCH)
            ]
            await asyncio.wait_for(asyncio.gather(*(h.persisted() for h in handles)), 60)
            print("persisted", time.time(), *[h.id for h in handles], flush=True)
            await asyncio.sleep(0.05)
    finally:
        await rt.shutdown(30)
    print("done", flush=True)

asyncio.run(main())
"""


def _persisted_lines(procs: Processes, producer: subprocess.Popen[bytes]) -> list[list[str]]:
    return [
        line.split()[1:]
        for line in procs.log_of(producer).splitlines()
        if line.startswith("persisted ")
    ]


def test_redis_restart_mid_run_loses_no_accepted_task(
    procs: Processes, own_redis: RedisServer, effects: tuple[str, Effects]
) -> None:
    """redis-server is SIGKILLed (AOF fsynced on every write) while a producer spawns
    and 3 workers run, then restarted on the same port and directory: every task the
    producer saw persisted() succeeds, once per key; the workers and the producer
    reconnect by themselves (no restart of theirs)."""
    url = f"{own_redis.url}?prefix=restart"
    view = StoreView(url)
    try:
        _restart_mid_run(procs, own_redis, url, view, effects)
    finally:
        view.close()


def _restart_mid_run(
    procs: Processes,
    server: RedisServer,
    url: str,
    view: StoreView,
    effects: tuple[str, Effects],
) -> None:
    epath, fx = effects
    n, batch, lease = 4000, 100, 2.0
    workers = [
        procs.worker(url, MODULE, f"worker{i}", lease=lease, concurrency=16, threads=16)
        for i in range(3)
    ]
    script = PACED_PRODUCER.format(module=MODULE, n=n, batch=batch)
    producer = procs.start(["-c", script, url, epath], "producer")

    def mid_run() -> bool:
        if producer.poll() is not None:
            raise AssertionError(f"the producer ended early:\n{procs.log_of(producer)[-3000:]}")
        return (
            len(_persisted_lines(procs, producer)) >= 10
            and view.by_state().get("succeeded", 0) >= 300
        )

    wait_for("the producer and the workers to be mid-run", mid_run, 60, every=0.02)
    done_before = view.by_state().get("succeeded", 0)
    persisted_before = len(_persisted_lines(procs, producer))
    server.kill()
    killed_at = time.time()
    time.sleep(1.0)  # down: the producer's spawns and the workers' outcomes wait
    server.start()
    restarted_at = time.time()
    assert view.by_state().get("succeeded", 0) >= done_before, "the AOF lost outcomes"

    try:
        assert producer.wait(90) == 0, procs.log_of(producer)[-3000:]
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the producer did not finish:\n{procs.logs()}") from None
    assert procs.log_of(producer).rstrip().endswith("done"), procs.log_of(producer)[-3000:]
    lines = _persisted_lines(procs, producer)
    task_ids = [i for line in lines for i in line[1:]]
    assert len(task_ids) == n
    after = [float(line[0]) for line in lines if float(line[0]) > restarted_at]
    assert after, "the producer persisted nothing after the restart"

    def all_succeeded() -> bool:
        for w in workers:
            assert STORE_THREAD_DIED not in procs.log_of(w), procs.log_of(w)[-3000:]
        return view.by_state().get("succeeded", 0) >= n

    wait_for(
        "every persisted task to succeed",
        all_succeeded,
        90,
        every=0.1,
        detail=lambda: _diagnose(procs, view),
    )
    tasks = view.tasks()
    lost = [i for i in task_ids if tasks.get(i, ("missing",))[0] != "succeeded"]
    assert not lost, f"{len(lost)} persisted tasks did not succeed: {lost[:5]}"
    assert len(tasks) == n
    keys = [f"k{i}" for i in range(n)]
    assert fx.effects() == dict.fromkeys(keys, 1)
    # The workers reconnected by themselves: each ran tasks after the restart.
    ran_after = {pid for _, pid, t in fx.runs() if t > restarted_at}
    assert ran_after == {w.pid for w in workers}, procs.logs()
    for w in workers:
        assert w.poll() is None, procs.logs()
    twice = sum(1 for c in _runs_per_key(fx).values() if c >= 2)
    print(
        f"\n[redis restart] killed with {done_before} of {n} done and {persisted_before}"
        f" batches of {batch} persisted, down {restarted_at - killed_at:.1f} s;"
        f" {len(after)} batches persisted after; {twice} keys ran twice or more"
    )


def test_redis_restart_while_a_worker_waits_on_an_empty_queue(
    procs: Processes, own_redis: RedisServer, effects: tuple[str, Effects]
) -> None:
    """An idle worker polls the store for new tasks; redis-server is SIGKILLed and
    restarted under it: the worker goes on working (its store thread survives)."""
    url = f"{own_redis.url}?prefix=idle"
    epath, fx = effects
    worker = procs.worker(url, MODULE, "worker", lease=2.0)
    time.sleep(0.3)  # (polling an empty queue)
    own_redis.kill()
    time.sleep(1.0)
    own_redis.start()
    keys = [f"k{i}" for i in range(20)]
    produce(url, [(proc_tasks.work, (epath, k, 0.0)) for k in keys])

    def all_done() -> bool:
        assert STORE_THREAD_DIED not in procs.log_of(worker), procs.log_of(worker)
        return len(fx.effects()) == len(keys)

    wait_for("the worker to run the tasks", all_done, 30, every=0.05, detail=procs.logs)
    assert fx.effects() == dict.fromkeys(keys, 1)
    assert worker.poll() is None


# -- 9. Redis paused past the lease -----------------------------------------------------
def _pause(server: RedisServer, how: str, seconds: float) -> None:
    """Redis stops answering for `seconds` (every client waits; nothing is refused)."""
    client = redis.Redis(host="127.0.0.1", port=server.port)
    try:
        if how == "client-pause-write":
            client.execute_command("CLIENT", "PAUSE", int(seconds * 1000), "WRITE")
            time.sleep(seconds)
        elif how == "client-pause-all":
            client.execute_command("CLIENT", "PAUSE", int(seconds * 1000), "ALL")
            time.sleep(seconds)
        elif how == "debug-sleep":
            client.execute_command("DEBUG", "SLEEP", seconds)  # returns when Redis wakes
        else:
            server.pause()  # SIGSTOP
            try:
                time.sleep(seconds)
            finally:
                server.resume()
    finally:
        client.close()


@pytest.mark.parametrize("how", ["client-pause-write", "debug-sleep", "sigstop"])
def test_redis_paused_past_the_lease_no_unfenced_second_run(
    procs: Processes, own_redis: RedisServer, effects: tuple[str, Effects], how: str
) -> None:
    """Worker A holds 16 tasks: 8 that end during the pause (their outcomes wait), 8
    that run on past it; B and C are idle. Redis pauses for 2x the lease: every lease
    runs out meanwhile, so after the pause B or C may reclaim A's tasks before A renews
    and run them again. Whatever the interleaving: each task succeeds once in the store
    (the attempt of its last run), one effect per key, and every run beyond the first
    had its ack refused (the workers' logs count them)."""
    url = f"{own_redis.url}?prefix=pause"
    view = StoreView(url)
    try:
        _paused_past_lease(procs, own_redis, url, view, effects, how)
    finally:
        view.close()


def _paused_past_lease(
    procs: Processes,
    server: RedisServer,
    url: str,
    view: StoreView,
    effects: tuple[str, Effects],
    how: str,
) -> None:
    epath, fx = effects
    lease, pause = 1.0, 2.0
    short = [f"short{i}" for i in range(8)]
    long = [f"long{i}" for i in range(8)]
    # B and C start first (that takes a while), then wait stopped while A claims all.
    others = [
        procs.worker(url, MODULE, name, lease=lease, concurrency=32, threads=32, ready=False)
        for name in ("worker-b", "worker-c")
    ]
    for w in others:
        procs.wait_ready(w)
        w.send_signal(signal.SIGSTOP)
    try:
        a = procs.worker(url, MODULE, "worker-a", lease=lease, concurrency=32, threads=32)
        calls = [(proc_tasks.work_here, (epath, k, 1.5)) for k in short]
        calls += [(proc_tasks.work_here, (epath, k, 3.0)) for k in long]
        ids = produce(url, calls, retries=3)
        wait_for("worker A to start the 16 tasks", lambda: len(fx.runs()) == 16, 30)
    finally:
        for w in others:
            w.send_signal(signal.SIGCONT)
    time.sleep(0.2)  # (B and C look at the queue: empty)
    assert len(view.running_of(a.pid)) == 16, "a task ended before the pause"
    _pause(server, how, pause)
    workers = [a, *others]

    wait_for(
        "every task to succeed",
        lambda: view.by_state().get("succeeded", 0) == 16,
        60,
        every=0.05,
        detail=lambda: _diagnose(procs, view),
    )
    runs = _runs_per_key(fx)
    extra = sum(c - 1 for c in runs.values())
    # Every run beyond a key's first ended with a refused ack (A's late outcomes
    # arrive once its long attempts end).
    wait_for(
        f"the workers to report {extra} refused acks",
        lambda: _refused_acks(procs, workers) >= extra,
        30,
        detail=procs.logs,
    )
    time.sleep(0.5)  # (a surplus refusal, if any, shows too)
    assert _refused_acks(procs, workers) == extra, procs.logs()
    tasks = view.tasks()
    key_of = dict(zip(ids, short + long))
    # The store kept each task's last attempt (one per run): its ack was the one written.
    assert {key_of[i]: tasks[i] for i in ids} == {
        key_of[i]: ("succeeded", runs[key_of[i]], None) for i in ids
    }, procs.logs()
    # ... and its result is that run's: "key@pid" of the key's last run.
    last_run = {key: f"{key}@{pid}" for key, pid, _ in fx.runs()}  # (in start order)
    results = {}
    for i in ids:
        record = view.get(i)
        assert record is not None and record.result is not None, i
        results[key_of[i]] = msgspec.msgpack.decode(record.result)
    assert results == last_run, procs.logs()
    assert fx.effects() == dict.fromkeys(short + long, 1)
    assert not view.owned()
    for w in workers:
        assert w.poll() is None, procs.logs()
    print(
        f"\n[redis {how} {pause:g} s, lease {lease:g} s] {extra} second runs, each with its"
        " ack refused"
    )
