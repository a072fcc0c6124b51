"""A hostile review of the durable tier: each test here shows one defect found by
reading the code, and is marked xfail(strict=True) until it is fixed (then the
marker comes off). Store-level tests drive the `Store` interface directly (the store
never reads the clock: times are passed in); the others go through a Runtime.

Races are made deterministic by pausing one side at the exact point the other side
must overtake it (an Event), never by sleeping.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from waiting import wait_until

import offload
from offload.durable import DurableTaskFailed, StoreError
from offload.durable._sqlite import open_sqlite
from offload.durable._store import NewTask, Outcome, Store
from offload.durable._thread import PENDING, StoreThread

from . import tasks
from .conftest import MakeRuntime

T0 = 1_800_000_000.0  # a wall-clock time; the store never reads the clock itself
LEASE = 30.0


def new(task_id: str, *, key: str | None = None, on_duplicate: str = "join") -> NewTask:
    return NewTask(
        id=task_id,
        fn="tests.durable.tasks:add",
        name="add",
        payload=b"\x92\x92\x01\x02\x80",
        codec="msgpack",
        eta=T0,
        max_attempts=3,
        timeout=None,
        backoff=None,
        retry_on=(),
        created=T0,
        key=key,
        on_duplicate=on_duplicate,
    )


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = "memory://" if request.param == "memory" else "sqlite:///" + str(tmp_path / "r.db")
    s = open_sqlite(url, durability="normal")
    try:
        yield s
    finally:
        s.close()


def write(store: Store, fn: Callable[[], Any]) -> Any:
    with store.batch():
        return fn()


def state_of(store: Store, task_id: str) -> str:
    record = store.get(task_id)
    assert record is not None
    return record.state


# -- cancellation requests that the store forgets --------------------------------------------


def test_cancel_request_survives_a_reclaim(store: Store) -> None:
    write(store, lambda: store.enqueue([new("a")], T0))
    write(store, lambda: store.claim("w1", 1, T0, LEASE))
    assert write(store, lambda: store.cancel("a", T0 + 1)) == "requested"
    # w1 dies before it sees the request: its lease runs out and any worker reclaims
    write(store, lambda: store.reclaim(T0 + LEASE + 1))
    assert state_of(store, "a") == "cancelled"
    assert write(store, lambda: store.claim("w2", 1, T0 + LEASE + 2, LEASE)) == []


def test_cancel_request_survives_a_failed_attempt(store: Store) -> None:
    write(store, lambda: store.enqueue([new("a")], T0))
    write(store, lambda: store.claim("w1", 1, T0, LEASE))
    assert write(store, lambda: store.cancel("a", T0 + 1)) == "requested"
    # a sync function can't be interrupted: it goes on, then fails retryably
    retry = Outcome("a", 1, "retry", error_type="ValueError", error="boom", eta=T0 + 2)
    assert write(store, lambda: store.finish("w1", [retry], T0 + 2, 3600.0)) == []
    assert state_of(store, "a") == "cancelled"


def test_replaced_running_holder_is_not_requeued_by_a_release(store: Store) -> None:
    write(store, lambda: store.enqueue([new("old", key="k")], T0))
    write(store, lambda: store.claim("w1", 1, T0, LEASE))
    write(store, lambda: store.enqueue([new("new", key="k", on_duplicate="replace")], T0 + 1))
    # w1 shuts down before its renewal told it to stop: it releases what it holds
    write(store, lambda: store.release("w1", T0 + 2))
    assert state_of(store, "old") == "cancelled"
    claimed = write(store, lambda: store.claim("w2", 10, T0 + 3, LEASE))
    assert [c.id for c in claimed] == ["new"]


# -- periodic slots ---------------------------------------------------------------------------


def test_a_slot_older_than_a_fired_one_does_not_fire_again(store: Store) -> None:
    assert write(store, lambda: store.fire_slot("s", 100.0, new("r1"), T0))
    assert write(store, lambda: store.fire_slot("s", 160.0, new("r2"), T0))
    # another process, one period late (a blocked loop, a clock 60 s behind), fires 100
    assert not write(store, lambda: store.fire_slot("s", 100.0, new("r3"), T0))


# -- the dead-letter set -------------------------------------------------------------------------


def test_retry_dead_with_its_key_held_elsewhere(store: Store) -> None:
    write(store, lambda: store.enqueue([new("dead-keyed", key="k"), new("dead-plain")], T0))
    claimed = write(store, lambda: store.claim("w1", 2, T0, LEASE))
    outcomes = [Outcome(c.id, c.attempt, "dead", error_type="E", error="e") for c in claimed]
    write(store, lambda: store.finish("w1", outcomes, T0 + 1, 3600.0))
    write(store, lambda: store.enqueue([new("holder", key="k")], T0 + 2))
    # the operator's `dlq retry --all`: the plain one goes back; the keyed one must not
    # make a second holder of "k" (it stays dead, or joins), and nothing raises
    write(store, lambda: store.retry_dead(None, T0 + 3))
    assert state_of(store, "dead-plain") == "queued"
    holders = [t for t in store.tasks("queued", 10) if t.key == "k"]
    assert [t.id for t in holders] == ["holder"]


# -- outcomes that never reach the store ----------------------------------------------------------


def always_fails() -> None:
    raise ConnectionError("down")


def test_a_backoff_that_overflows_still_ends_the_task(
    make_runtime: MakeRuntime, store_url: str
) -> None:
    rt = make_runtime(store=store_url)
    # factor ** 2 overflows a float at the third attempt (as 2.0 ** 1024 does at the
    # 1025th attempt of the default backoff, retries allowing up to 1,000,000)
    backoff = offload.Backoff(initial=0.0, factor=1e300, max=0.0, jitter=False)
    handle = rt.durable.options(retries=4, backoff=backoff).spawn(always_fails)
    with pytest.raises(DurableTaskFailed):
        handle.result_sync(5)


# -- per-task state kept forever ------------------------------------------------------------------


def test_a_cancel_request_is_forgotten_when_the_attempt_ends(
    make_runtime: MakeRuntime, store_url: str
) -> None:
    tasks.gate.clear()
    rt = make_runtime(store=store_url, lease=0.3)  # renewals (and cancel requests) every 0.1 s
    try:
        handle = rt.durable.spawn(tasks.wait_gate)
        handle.wait_persisted(5)
        assert wait_until(lambda: (i := handle.info()) is not None and i.state == "running", 5)
        assert handle.cancel() == "requested"
        worker = rt.durable._worker
        assert worker is not None
        assert wait_until(lambda: handle.id in worker._cancel_requested, 5)
    finally:
        tasks.gate.set()
    assert handle.result_sync(5) == "opened"
    assert wait_until(lambda: handle.id not in worker._cancel_requested, 2)


# -- waking waiters -------------------------------------------------------------------------------


class RacingHandle:
    """A handle whose first read of `_state` (PENDING) is overtaken by the store thread
    committing it: exactly the interleaving of a caller in when_settled() and the store
    thread in _persisted(), forced."""

    def __init__(self, thread: StoreThread) -> None:
        self._thread = thread
        self._value = PENDING
        self._duplicate_of: str | None = None
        self._overtaken = False

    @property
    def _state(self) -> int:
        value = self._value
        if value == PENDING and not self._overtaken:
            self._overtaken = True
            committed = types.SimpleNamespace(handle=self, duplicate_of=None)
            store_thread = threading.Thread(target=self._thread._persisted, args=([committed],))
            store_thread.start()
            store_thread.join(1.0)  # a fixed _settle waits for the caller's lock: go on
        return value

    @_state.setter
    def _state(self, value: int) -> None:
        self._value = value


def test_a_waiter_racing_the_commit_is_woken() -> None:
    thread = StoreThread(lambda: None, owner="w", lease=30.0, result_ttl=60.0)  # type: ignore[arg-type,return-value]
    handle = RacingHandle(thread)
    woken = threading.Event()
    thread.when_settled(handle, woken.set)
    assert woken.wait(3)


# -- a spawn racing the close ----------------------------------------------------------------------


def test_a_spawn_racing_close_is_refused_or_reported(
    make_runtime: MakeRuntime, store_url: str
) -> None:
    rt = make_runtime(store=store_url, durable_concurrency=0)
    durable = rt.durable
    durable.start()
    thread = durable._thread
    assert thread is not None and thread.store is not None
    real_inbox, store = thread.inbox, thread.store
    at_put, closing, go = threading.Event(), threading.Event(), threading.Event()

    class Inbox:  # the spawn is preempted just before its put, until the close began
        def put(self, item: Any) -> None:
            if type(item) is NewTask and not at_put.is_set():
                at_put.set()
                closing.wait(5)
            real_inbox.put(item)

        def get(self, *args: Any, **kwargs: Any) -> Any:
            return real_inbox.get(*args, **kwargs)

        def get_nowait(self) -> Any:
            return real_inbox.get_nowait()

        def qsize(self) -> int:
            return real_inbox.qsize()

    real_close = store.close

    def slow_close() -> None:  # the store thread, after its last take, closing the file
        closing.set()
        go.wait(5)
        real_close()

    thread.inbox = Inbox()  # type: ignore[assignment]
    store.close = slow_close  # type: ignore[method-assign]
    result: dict[str, Any] = {}

    def spawner() -> None:
        try:
            result["handle"] = durable.spawn(tasks.add, 1, 2)
        except StoreError as exc:
            result["error"] = exc

    spawning = threading.Thread(target=spawner)
    spawning.start()
    assert at_put.wait(5)
    closer = threading.Thread(target=durable.close, args=(5.0,))
    closer.start()
    spawning.join(5)
    go.set()
    closer.join(10)
    if "error" in result:
        return  # refused at the call site: fine
    with pytest.raises(StoreError):
        result["handle"].wait_persisted(3)


# -- bad input at the public entries ---------------------------------------------------------------


def test_retry_dead_and_purge_refuse_a_str_of_ids(
    make_runtime: MakeRuntime, store_url: str
) -> None:
    rt = make_runtime(store=store_url, durable_concurrency=0)
    with pytest.raises(TypeError):
        rt.durable.retry_dead("0758fb2be97b-1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        rt.durable.purge("dead", "0758fb2be97b-1")  # type: ignore[arg-type]


def test_a_decorated_function_takes_a_name_option(
    make_runtime: MakeRuntime, store_url: str
) -> None:
    rt = make_runtime(store=store_url)
    previous = offload._replace_default_runtime(rt)
    try:
        handle = tasks.decorated.options(name="doubling").spawn(tasks.decorated, 4)
        assert handle.name == "doubling"
        assert handle.result_sync(10) == 8
    finally:
        offload._replace_default_runtime(previous)


# -- an outcome racing a graceful close -------------------------------------------------------------


class _HoldDeadLetterLog(logging.Handler):
    """Holds the worker's dead-letter report (logged in Worker._done, before the outcome
    is put) until the store thread has ended, as slow log I/O can."""

    def __init__(self, thread: StoreThread) -> None:
        super().__init__(logging.ERROR)
        self.thread = thread
        self.entered = threading.Event()
        self.left = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "dead-letter" not in record.getMessage() or self.entered.is_set():
            return
        self.entered.set()
        wait_until(lambda: not self.thread.alive, 3)
        self.left.set()


def test_an_outcome_racing_close_is_written(make_runtime: MakeRuntime, sqlite_url: str) -> None:
    rt = make_runtime(store=sqlite_url)
    rt.durable.start()
    thread = rt.durable._thread
    assert thread is not None
    hold = _HoldDeadLetterLog(thread)
    logger = logging.getLogger("offload")
    logger.addHandler(hold)
    try:
        handle = rt.durable.spawn(tasks.fail, "late")
        handle.wait_persisted(5)
        assert hold.entered.wait(5)  # the attempt is over; its outcome is on its way
        rt.close(40)  # a fix may wait (join share: 4 s) for the 3 s-late outcome
        assert hold.left.wait(5)
    finally:
        logger.removeHandler(hold)
    store = open_sqlite(sqlite_url, durability="normal")
    try:
        record = store.get(handle.id)
    finally:
        store.close()
    assert record is not None and record.state == "dead"


# -- SQLite versions -----------------------------------------------------------------------------


def test_an_sqlite_older_than_the_sql_needs_is_refused_at_open(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import sqlite3

    from offload.durable import _sqlite

    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 37, 2))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.37.2")
    try:
        store = open_sqlite("sqlite:///" + str(tmp_path / "old.db"), durability="normal")
    except StoreError as exc:
        assert "3.37" in str(exc)  # refused, saying which SQLite it found
        return
    store.close()
    # or it opens and speaks only what 3.37 understands
    assert "->>" not in _sqlite._INSERT_ROWS


# -- the async shutdown ----------------------------------------------------------------------------


def test_async_shutdown_does_not_block_the_loop_on_the_store(
    make_runtime: MakeRuntime, sqlite_url: str, arun: Any
) -> None:
    async def main() -> None:
        rt = make_runtime(store=sqlite_url, durable_concurrency=0)
        rt.durable.start()
        thread = rt.durable._thread
        assert thread is not None and thread.store is not None
        store, real_close, real_stop = thread.store, thread.store.close, thread.stop
        closing, go = threading.Event(), threading.Event()
        seen: dict[str, bool] = {"in_stop": False}

        def slow_close() -> None:  # the last commit and close take a while (a busy disk)
            closing.set()
            go.wait(5)
            real_close()

        def stop(timeout: float | None = None) -> bool:
            seen["in_stop"] = True
            try:
                return real_stop(timeout)
            finally:
                seen["in_stop"] = False

        store.close = slow_close  # type: ignore[method-assign]
        thread.stop = stop  # type: ignore[method-assign]

        async def watcher() -> bool:
            while not closing.is_set():
                await asyncio.sleep(0.001)
            ran_during_stop = seen["in_stop"]
            go.set()
            return ran_during_stop

        watching = asyncio.ensure_future(watcher())
        await rt.shutdown(4)
        go.set()
        assert await watching  # the loop ran while the store was closing

    arun(main(), timeout=20)


# -- user code on the store thread -------------------------------------------------------------------

#: Set while a test wants SlowToBuild's conversion to block.
armed, decoding, hold_decode = threading.Event(), threading.Event(), threading.Event()


@dataclasses.dataclass
class SlowToBuild:
    n: int

    def __post_init__(self) -> None:  # user code msgspec runs when it converts an argument
        if armed.is_set():
            decoding.set()
            hold_decode.wait(5)


def build(value: SlowToBuild) -> int:
    return value.n


def test_user_code_decoding_arguments_does_not_stall_the_store_thread(
    make_runtime: MakeRuntime, store_url: str
) -> None:
    decoding.clear()
    hold_decode.clear()
    rt = make_runtime(store=store_url)
    value = SlowToBuild(7)
    armed.set()
    try:
        first = rt.durable.spawn(build, value)
        assert decoding.wait(5)  # a worker is converting its argument
        second = rt.durable.spawn(tasks.add, 1, 2)
        second.wait_persisted(2)  # committed while that conversion goes on
    finally:
        armed.clear()
        hold_decode.set()
    assert first.result_sync(5) == 7


# -- result(timeout) bounds the whole wait ---------------------------------------------------------


def test_result_timeout_bounds_the_wait_for_the_commit_too(
    make_runtime: MakeRuntime, sqlite_url: str, arun: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    from offload.durable import _sqlite

    monkeypatch.setattr(_sqlite, "BUSY_TIMEOUT", 4.0)  # the store gives up after 4 s
    rt = make_runtime(store=sqlite_url, durable_concurrency=0)
    rt.durable.start()
    other = sqlite3.connect(sqlite_url[len("sqlite:///") :], isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock

    async def main() -> None:
        handle = rt.durable.spawn(tasks.add, 1, 2)
        with pytest.raises(TimeoutError):
            await handle.result(timeout=0.5)

    try:
        arun(main(), timeout=20)
    finally:
        other.execute("ROLLBACK")
        other.close()


# -- lookups and the operators' commands --------------------------------------------------------------


def test_a_lookup_survives_a_result_it_cannot_decode(
    make_runtime: MakeRuntime, sqlite_url: str
) -> None:
    worker = make_runtime(store=sqlite_url, serializer="pickle", signing_key="k" * 32)
    handle = worker.durable.spawn(tasks.add, 1, 2)
    assert handle.result_sync(10) == 3
    reader = make_runtime(store=sqlite_url, durable_concurrency=0)  # no signing key
    listed = reader.durable.tasks()
    assert [(i.id, i.state) for i in listed] == [(handle.id, "succeeded")]
    info = reader.durable.get(handle.id)
    assert info is not None and info.state == "succeeded"


@pytest.mark.parametrize(
    ("store", "said"),
    [
        ("postgres://localhost:5432/x", "unknown durable store"),
        # (a port nothing listens on: 1 is reserved)
        ("redis://127.0.0.1:1/0", "cannot reach the durable store 'redis://127.0.0.1:1/0'"),
    ],
)
def test_cli_reports_a_bad_store_without_a_traceback(
    capsys: pytest.CaptureFixture[str], store: str, said: str
) -> None:
    from offload.durable._cli import main

    assert main(["status", "--store", store]) != 0
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err


# -- an attempt that ends cancelled nobody asked for ---------------------------------------------------

cancelled_runs: list[int] = []


async def raises_cancelled() -> None:
    cancelled_runs.append(1)
    raise asyncio.CancelledError  # user code: an inner cancellation let through


def test_an_attempt_cancelled_by_its_own_code_counts(
    make_runtime: MakeRuntime, store_url: str
) -> None:
    cancelled_runs.clear()
    rt = make_runtime(store=store_url)
    handle = rt.durable.options(retries=1).spawn(raises_cancelled)
    with pytest.raises(DurableTaskFailed):
        handle.result_sync(5)
    assert len(cancelled_runs) == 2


# -- fork --------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_child_forked_while_the_store_opens_can_spawn(
    make_runtime: MakeRuntime, sqlite_url: str
) -> None:
    rt = make_runtime(store=sqlite_url, durable_concurrency=0)
    durable = rt.durable
    holding, done = threading.Event(), threading.Event()

    def opener() -> None:  # another thread of the parent, inside _require_thread
        with durable._lock:
            holding.set()
            done.wait(10)

    thread = threading.Thread(target=opener)
    thread.start()
    assert holding.wait(5)
    child = os.fork()
    if child == 0:  # pragma: no cover (the child process)
        code = 3
        try:
            spawned = threading.Event()

            def spawn() -> None:
                durable.spawn(tasks.add, 1, 2).wait_persisted(5)
                spawned.set()

            threading.Thread(target=spawn, daemon=True).start()
            code = 0 if spawned.wait(5) else 1
        finally:
            os._exit(code)
    done.set()
    thread.join(5)
    deadline = time.monotonic() + 15
    while True:
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            os.kill(child, signal.SIGKILL)
            pytest.fail("the forked child hung past its own deadline")
        time.sleep(0.02)
    assert os.waitstatus_to_exitcode(status) == 0


# -- a corrupted row ---------------------------------------------------------------------------------


def test_a_corrupted_row_is_dead_lettered_and_the_worker_goes_on(
    make_runtime: MakeRuntime, sqlite_url: str
) -> None:
    import sqlite3

    producer = make_runtime(store=sqlite_url, durable_concurrency=0)
    bad = producer.durable.spawn(tasks.add, 1, 2)
    bad.wait_persisted(5)
    db = sqlite3.connect(sqlite_url[len("sqlite:///") :], isolation_level=None)
    try:
        db.execute("UPDATE offload_tasks SET payload = '%% not base64' WHERE id = ?", (bad.id,))
    finally:
        db.close()
    worker = make_runtime(store=sqlite_url)
    good = worker.durable.spawn(tasks.add, 2, 3)
    assert good.result_sync(5) == 5
    info = worker.durable.get(bad.id)
    assert info is not None and info.state == "dead"


# -- a store locked past the busy timeout ---------------------------------------------------------------


def test_a_spawn_during_a_long_lock_is_committed_once_the_lock_is_gone(
    make_runtime: MakeRuntime, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import contextlib
    import sqlite3

    from offload.durable import _sqlite

    monkeypatch.setattr(_sqlite, "BUSY_TIMEOUT", 0.3)
    rt = make_runtime(store=sqlite_url, durable_concurrency=0)
    rt.durable.start()
    thread = rt.durable._thread
    assert thread is not None and thread.store is not None
    store = thread.store
    real_batch = store.batch
    busy: list[BaseException] = []

    @contextlib.contextmanager
    def batch() -> Iterator[None]:
        try:
            with real_batch():
                yield
        except StoreError as exc:
            busy.append(exc)
            raise

    store.batch = batch  # type: ignore[method-assign]
    other = sqlite3.connect(sqlite_url[len("sqlite:///") :], isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # a long reader-writer: a backup, a migration
    try:
        handle = rt.durable.spawn(tasks.add, 1, 2)
        assert wait_until(lambda: bool(busy), 5)  # the store thread waited it out once
    finally:
        other.execute("ROLLBACK")
        other.close()
    handle.wait_persisted(5)
