"""The durable tier's Python face: `runtime.durable` (a `Durable`), its lanes
(`.options(...)`), the handles `spawn` returns (`DurableTask`) and what lookups
return (`DurableInfo`).

A spawn checks everything at the call site (the function imports back, the
arguments encode, the controls are valid), builds a `NewTask` and puts it in the
store thread's inbox: it never waits for the disk, unless `sync_commit=True` asked
it to (from a thread that is not running an event loop). The store thread commits
it within one group commit and marks the handle persisted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as _dt
import itertools
import os
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from .._controls import Backoff, Duplicate, merge_controls
from ._codec import Codec, codec_for, function_ref, make_codec, resolve_function
from ._sqlite import new_owner, open_sqlite
from ._store import (
    ACTIVE_STATES,
    Depths,
    NewTask,
    SlotFire,
    Store,
    StoreError,
    TaskRecord,
    display_url,
    encode_row,
)
from ._thread import FAILED, PENDING, StoreThread
from ._worker import Worker

if TYPE_CHECKING:
    from .._runtime import Runtime

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

#: The store a durable spawn uses when none was configured (relative to the working
#: directory, i.e. beside the app), unless OFFLOAD_STORE names one.
DEFAULT_STORE = "sqlite:///offload.db"
#: Retries of a durable task that names none: a worker killed mid-task costs its tasks
#: an attempt (that is what stops a task that kills its worker from looping forever),
#: so with no retries a deploy's SIGKILL would dead-letter everything in flight.
DEFAULT_RETRIES = 3

#: A thread spawning in a tight loop holds the GIL, and the store thread needs it
#: between its SQLite calls (CPython makes a waiting thread wait up to the 5 ms switch
#: interval). When more than BACKLOG spawns wait and the store thread last took its
#: inbox more than STARVED seconds ago, a spawn first hands the GIL over
#: (`time.sleep(0)`), so the commit window stays a few milliseconds under a burst.
BACKLOG = 256
STARVED = 0.002
_FINAL = frozenset({"succeeded", "dead", "cancelled"})
#: Options of `durable.options()` besides the task controls.
_DURABLE_ONLY = ("name", "sync_commit")
_REFUSED = {
    "limit_key": "per-key limits apply to in-process tasks; a durable task's concurrency"
    " is each worker's durable_concurrency",
    "limit": "per-key limits apply to in-process tasks; a durable task's concurrency"
    " is each worker's durable_concurrency",
    "lane": "a durable task runs on the lane its function gets (threads for a plain"
    " function, a loop for a coroutine function)",
}


def resolve_store_url(store: Any) -> str:
    """The configured store, else OFFLOAD_STORE, else ./offload.db."""
    if store is None:
        store = os.environ.get("OFFLOAD_STORE") or DEFAULT_STORE
    if isinstance(store, os.PathLike):
        return "sqlite:///" + str(os.fspath(store))
    return str(store)


#: The URL schemes of a Redis store (see _redis.py).
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_STORE_FORMS = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db, memory://,"
    " or redis://host:6379/0 (also rediss://, unix://)"
)


def store_kind(url: str) -> str:
    """ "sqlite", "memory" or "redis" for a store URL; ValueError, saying the forms a
    store URL takes, for anything else (the one place that reads URL schemes)."""
    if url == "memory://":
        return "memory"
    if url.startswith("sqlite:///"):
        if url[len("sqlite:///") :] in ("", ":memory:"):
            raise ValueError(f"store {url!r} names no file; use sqlite:///path/to/offload.db")
        return "sqlite"
    if url.startswith(REDIS_SCHEMES):
        from ._redis import split_url

        split_url(url)  # (checks the prefix)
        return "redis"
    scheme = url.partition("://")[0] if "://" in url else url
    raise ValueError(f"unknown durable store {url!r} (scheme {scheme!r}); use {_STORE_FORMS}")


def open_store(url: str, durability: str) -> Store:
    try:
        kind = store_kind(url)  # (OFFLOAD_STORE is read only now)
    except ValueError as exc:
        raise StoreError(str(exc)) from None
    if kind == "redis":
        from ._redis import open_redis

        return open_redis(url, durability=durability)
    return open_sqlite(url, durability=durability)


class _Ids:
    """Task ids: unique across processes and restarts without asking the store."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = os.urandom(6).hex()
        self.counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}-{next(self.counter)}"


_ids = _Ids()


@dataclass(frozen=True)
class DurableInfo:
    """A durable task as the store has it (`offload.durable.get`)."""

    id: str
    name: str
    function: str
    state: str  # queued, scheduled, running, succeeded, dead, cancelled
    attempt: int
    max_attempts: int
    key: str | None
    created: float
    eta: float
    started: float | None
    finished: float | None
    owner: str | None
    lease_until: float | None
    cancel_requested: bool
    error_type: str | None
    error: str | None
    result: Any
    #: Why `result` is None although a result was stored (it could not be decoded here).
    result_error: str | None = None

    @property
    def done(self) -> bool:
        return self.state in _FINAL


class DurableTaskFailed(Exception):
    """`result()` of a durable task that went to the dead-letter set (or was
    cancelled): the original exception lived in another process, so its type name
    and traceback text are carried here."""

    def __init__(self, info: DurableInfo) -> None:
        detail = (info.error or "").strip().splitlines()
        last = detail[-1] if detail else info.state
        super().__init__(f"durable task {info.name} (id {info.id}) is {info.state}: {last}")
        self.info = info
        self.error_type = info.error_type


class DurableTask(Generic[R]):
    """The handle of a durable spawn. Its `id` works from any process sharing the store."""

    __slots__ = ("_duplicate_of", "_durable", "_error", "_id", "_key", "_rejects", "_state", "name")

    def __init__(self, task_id: str, name: str, durable: Durable) -> None:
        self._id = task_id
        self.name = name
        self._durable = durable
        self._state = PENDING
        self._error: StoreError | None = None
        self._duplicate_of: str | None = None
        self._key: str | None = None  # its key=, for a Duplicate's message
        self._rejects = False  # on_duplicate="reject": persisted() raises Duplicate

    @property
    def id(self) -> str:
        """The task's id; once persisted, a spawn that joined a task holding its
        `key` has that task's id."""
        return self._duplicate_of or self._id

    @property
    def joined(self) -> bool:
        """Persisted as a duplicate: `key=` was held, and this handle now follows the
        task that holds it."""
        return self._duplicate_of is not None

    def __repr__(self) -> str:
        state = ("pending", "persisted", "failed")[self._state]
        return f"<DurableTask {self.name} id={self.id} {state}>"

    # -- the commit ------------------------------------------------------------------
    async def persisted(self) -> None:
        """Return once the task is committed to the store; raise StoreError if the
        store refused it, Duplicate if its key was held and on_duplicate='reject'."""
        if self._state == PENDING:
            loop = asyncio.get_running_loop()
            future = loop.create_future()

            def settled() -> None:
                loop.call_soon_threadsafe(_resolve, future)

            self._durable._require_thread().when_settled(self, settled)
            await future
        self._raise_if_refused()

    def wait_persisted(self, timeout: float | None = None) -> None:
        """`persisted()` for a thread: blocks until committed (or refused)."""
        if self._state == PENDING:
            event = threading.Event()
            self._durable._require_thread().when_settled(self, event.set)
            if not event.wait(timeout):
                raise TimeoutError(f"durable task {self._id} not persisted within {timeout} s")
        self._raise_if_refused()

    def _raise_if_refused(self) -> None:
        if self._state == FAILED:
            assert self._error is not None
            raise self._error
        if self._duplicate_of is not None and self._rejects:
            raise Duplicate(
                f"a durable task with key {self._key!r} is already queued or running"
                f" (id {self._duplicate_of})",
                self,  # type: ignore[arg-type]
            )

    # -- the outcome ----------------------------------------------------------------------
    def info(self) -> DurableInfo | None:
        return self._durable.get(self.id)

    async def result(self, timeout: float | None = None) -> R:
        """Wait (from any process) for the task to finish; its result, or
        DurableTaskFailed. TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            await asyncio.wait_for(self.persisted(), timeout)
        except asyncio.TimeoutError:  # (3.10: not yet the builtin TimeoutError)
            raise TimeoutError(
                f"durable task {self._id} not persisted within {timeout} s"
            ) from None
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return await self._durable._await_result(self.id, left)  # type: ignore[no-any-return]

    def result_sync(self, timeout: float | None = None) -> R:
        deadline = None if timeout is None else time.monotonic() + timeout
        self.wait_persisted(timeout)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return self._durable._wait_result(self.id, left)  # type: ignore[no-any-return]

    def cancel(self) -> str:
        """Cancel: "cancelled" if it was queued or scheduled, "requested" if running
        (its worker cancels it), "finished" if too late."""
        self.wait_persisted()
        return self._durable.cancel(self.id)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def merge_options(spec: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """`spec` with durable `options` on top, each checked at the call site."""
    merged = dict(spec)
    controls = {}
    for name, value in options.items():
        if name in _REFUSED:
            raise TypeError(f"durable tasks take no {name}=: {_REFUSED[name]}")
        if name == "name":
            if value is not None and not isinstance(value, str):
                raise TypeError(f"name must be a str, not {type(value).__name__}")
            merged["name"] = value
        elif name == "sync_commit":
            if not isinstance(value, bool):
                raise TypeError(f"sync_commit must be a bool, not {type(value).__name__}")
            merged["sync_commit"] = value
        else:
            controls[name] = value
    merged.update(
        merge_controls({k: v for k, v in spec.items() if k not in _DURABLE_ONLY}, controls)
    )
    return merged


class DurableLane:
    """`durable.options(...)`: spawn with these controls."""

    def __init__(self, durable: Durable, spec: dict[str, Any]) -> None:
        self._durable = durable
        self._spec = spec
        self._plan = _Plan(spec)

    def options(self, **options: Any) -> DurableLane:
        return DurableLane(self._durable, self._durable._merge(self._spec, options))

    @overload
    def spawn(
        self, fn: Callable[P, Coroutine[Any, Any, T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> DurableTask[T]: ...
    @overload
    def spawn(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> DurableTask[T]: ...
    def spawn(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> DurableTask[Any]:
        return self._durable._spawn(self._plan, fn, args, kwargs)


class Durable:
    """A runtime's durable tier (`runtime.durable`). Opened on first use, or when the
    runtime starts if a store was configured."""

    def __init__(self, runtime: Runtime, options: dict[str, Any]) -> None:
        self._runtime = runtime
        self.url = resolve_store_url(options["store"])
        self._options = options
        self._codec: Codec = make_codec(options["serializer"], options["signing_key"])
        self._signing_key = _key_bytes(options["signing_key"])
        self._thread: StoreThread | None = None
        self._worker: Worker | None = None
        self._lock = threading.Lock()
        self._default = DurableLane(self, {"name": None, "sync_commit": options["sync_commit"]})
        self.closed = False

    # -- spawning ------------------------------------------------------------------------
    def options(self, **options: Any) -> DurableLane:
        return self._default.options(**options)

    @overload
    def spawn(
        self, fn: Callable[P, Coroutine[Any, Any, T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> DurableTask[T]: ...
    @overload
    def spawn(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> DurableTask[T]: ...
    def spawn(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> DurableTask[Any]:
        return self._spawn(self._default._plan, fn, args, kwargs)

    def _merge(self, spec: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
        return merge_options(spec, options)

    def _spawn(
        self,
        plan: _Plan,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> DurableTask[Any]:
        ref, _ = function_ref(fn)
        name = plan.name or ref
        payload = self._codec.encode_call(ref, args, kwargs)
        if plan.sync_commit:
            _refuse_on_loop()
        if self.closed:
            raise StoreError("this runtime is closed: its durable store is closed too")
        thread = self._thread or self._require_thread()
        if thread.error is not None:
            raise thread.error
        now = time.time()
        handle: DurableTask[Any] = DurableTask(_ids.next(), name, self)
        key = plan.key
        if key is not None:
            handle._key = key
            handle._rejects = plan.rejects
        task = NewTask(
            handle._id,
            ref,
            name,
            payload,
            self._codec.name,
            plan.at if plan.at is not None else now + plan.delay,
            plan.max_attempts,
            plan.timeout,
            plan.backoff,
            plan.retry_on,
            now,
            key,
            plan.on_duplicate,
            None,
            handle,
        )
        if key is None:
            task.row = encode_row(task)
        if thread.inbox.qsize() > BACKLOG and time.monotonic() - thread.taken_at > STARVED:
            time.sleep(0)  # the store thread waits for the GIL: hand it over (see BACKLOG)
        thread.inbox.put(task)
        if thread.ended and handle._state == PENDING:  # it closed under this spawn
            raise StoreError("this runtime is closed: its durable store is closed too")
        if plan.sync_commit:
            handle.wait_persisted()
        return handle

    def fire_slot(
        self, schedule: str, slot: float, fn: Callable[..., Any], *, skip_overlap: bool
    ) -> None:
        """A durable periodic schedule's run for `slot`: enqueued by the one process
        (of all those running the schedule) whose store write gets there first. With
        `skip_overlap`, a run whose previous one is still queued or running joins it
        (the schedule's key is held) instead of piling up."""
        ref, _ = function_ref(fn)
        thread = self._thread or self._require_thread()
        now = time.time()
        task = NewTask(
            _ids.next(),
            ref,
            schedule,
            self._codec.encode_call(ref, (), {}),
            self._codec.name,
            now,
            DEFAULT_RETRIES + 1,
            None,
            _backoff({}, DEFAULT_RETRIES),
            (),
            now,
            f"offload-periodic:{schedule}" if skip_overlap else None,
            "join",
        )
        thread.inbox.put(SlotFire(schedule, slot, task))

    # -- the store thread ---------------------------------------------------------------------
    def _require_thread(self) -> StoreThread:
        thread = self._thread
        if thread is not None:
            return thread
        with self._lock:
            if self._thread is None:
                if self.closed or self._runtime.closed:
                    raise StoreError("this runtime is closed: its durable store is closed too")
                self._thread = self._start_thread()
            return self._thread

    def _start_thread(self) -> StoreThread:
        options = self._options
        concurrency = options["durable_concurrency"]
        worker = Worker(self._runtime, concurrency, self._signing_key) if concurrency else None
        thread = StoreThread(
            lambda: open_store(self.url, options["durability"]),
            owner=new_owner(),
            lease=options["lease"],
            result_ttl=options["result_ttl"],
            worker=worker,
        )
        if worker is not None:
            worker.thread = thread
        thread.start()
        self._worker = worker
        return thread

    def start(self) -> None:
        """Open the store and start working its queue (the runtime's start)."""
        self._require_thread()

    @property
    def started(self) -> bool:
        return self._thread is not None

    # -- commits ---------------------------------------------------------------------------
    async def flush(self, timeout: float | None = None) -> None:
        """Return once every task spawned before the call is committed (or refused)."""
        if self._thread is None:
            return
        try:
            await asyncio.wait_for(asyncio.wrap_future(self._thread.barrier()), timeout)
        except asyncio.TimeoutError:  # (3.10: not yet the builtin TimeoutError)
            raise TimeoutError(f"durable tasks not all persisted within {timeout} s") from None

    def flush_sync(self, timeout: float | None = None) -> None:
        _refuse_on_loop()
        if self._thread is None:
            return
        _result(self._thread.barrier(), timeout, "durable tasks not all persisted")

    # -- lookups ------------------------------------------------------------------------------
    def _call(self, fn: Callable[[Store], Any], *, write: bool = False) -> Any:
        return self._require_thread().call(fn, write=write).result()

    async def _acall(self, fn: Callable[[Store], Any], *, write: bool = False) -> Any:
        return await asyncio.wrap_future(self._require_thread().call(fn, write=write))

    def _read(self, fn: Callable[[Store], Any], timeout: float | None = None) -> Any:
        return _result(self._require_thread().read(fn), timeout, "the durable store did not answer")

    async def _aread(self, fn: Callable[[Store], Any]) -> Any:
        return await asyncio.wrap_future(self._require_thread().read(fn))

    def get(self, task_id: str) -> DurableInfo | None:
        """What the store knows of durable task `task_id` (from any process)."""
        _check_id(task_id)
        record = self._read(lambda s: s.get(task_id))
        return None if record is None else self._info(record)

    async def aget(self, task_id: str) -> DurableInfo | None:
        _check_id(task_id)
        record = await self._aread(lambda s: s.get(task_id))
        return None if record is None else self._info(record)

    def tasks(self, state: str | None = None, limit: int = 100) -> list[DurableInfo]:
        """Durable tasks, newest first; `state` one of queued, running, succeeded,
        dead (the dead-letter set), cancelled."""
        _check_state(state)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be an int >= 1, got {limit!r}")
        return [self._info(r) for r in self._read(lambda s: s.tasks(state, limit))]

    def cancel(self, task_id: str) -> str:
        _check_id(task_id)
        return str(self._call(lambda s: s.cancel(task_id, time.time()), write=True))

    def depths(self, timeout: float | None = None) -> Depths:
        """Queue depths and leases; TimeoutError if the store has not answered within
        `timeout` seconds."""
        return self._read(lambda s: s.depths(time.time()), timeout)  # type: ignore[no-any-return]

    async def adepths(self) -> Depths:
        """`depths()` for a coroutine: the store thread answers, the loop never waits."""
        return await self._aread(lambda s: s.depths(time.time()))  # type: ignore[no-any-return]

    def retry_dead(self, task_ids: list[str] | None = None) -> int:
        """Queue dead-lettered tasks again (all if None), attempts reset; one whose key
        another task holds now stays dead. Returns how many moved."""
        ids = _check_ids(task_ids)
        return int(self._call(lambda s: s.retry_dead(ids, time.time()), write=True))

    def purge(self, state: str, task_ids: list[str] | None = None) -> int:
        _check_state(state)
        ids = _check_ids(task_ids)
        return int(self._call(lambda s: s.purge(state, ids), write=True))

    @property
    def shown_url(self) -> str:
        """The store's URL as logs, `status` and the dashboard show it (a password masked)."""
        return display_url(self.url)

    def stats(self) -> dict[str, Any]:
        thread, worker = self._thread, self._worker
        return {
            "store": self.shown_url,
            "open": thread is not None and thread.alive,
            "committed": thread.committed if thread else 0,
            "refused": thread.failed if thread else 0,
            "running": len(worker.active) if worker else 0,
            "started": worker.started if worker else 0,
            "finished": worker.finished if worker else 0,
            "concurrency": worker.concurrency if worker else 0,
        }

    def _info(self, record: TaskRecord) -> DurableInfo:
        state = record.state
        if state == "queued" and record.eta > time.time():
            state = "scheduled"
        result, result_error = self._decode_result(record)
        return DurableInfo(
            id=record.id,
            name=record.name,
            function=record.fn,
            state=state,
            attempt=record.attempt,
            max_attempts=record.max_attempts,
            key=record.key,
            created=record.created,
            eta=record.eta,
            started=record.started,
            finished=record.finished,
            owner=record.owner,
            lease_until=record.lease_until,
            cancel_requested=record.cancel_requested,
            error_type=record.error_type,
            error=record.error,
            result=result,
            result_error=result_error,
        )

    def _decode_result(self, record: TaskRecord) -> tuple[Any, str | None]:
        if record.result is None:
            return None, None
        try:
            fn = resolve_function(record.fn)
        except LookupError:
            fn = None  # decoded without its return annotation
        try:
            codec = codec_for(record.codec, self._signing_key)
            return codec.decode_result(fn, record.result), None
        except Exception as exc:  # noqa: BLE001 (a lookup must not fail on a bad result)
            return None, f"{type(exc).__qualname__}: {exc}"

    # -- results -------------------------------------------------------------------------------
    async def _await_result(self, task_id: str, timeout: float | None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.002
        while True:
            info = await self.aget(task_id)
            if info is not None and info.done:
                return _outcome(info)
            if info is None:
                raise StoreError(f"durable task {task_id} is not in the store (purged?)")
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"durable task {task_id} did not finish within {timeout} s")
            wait = pause if deadline is None else min(pause, max(0.0, deadline - time.monotonic()))
            await asyncio.sleep(wait)
            pause = min(pause * 2, 0.1)

    def _wait_result(self, task_id: str, timeout: float | None) -> Any:
        _refuse_on_loop()
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.002
        while True:
            info = self.get(task_id)
            if info is None:
                raise StoreError(f"durable task {task_id} is not in the store (purged?)")
            if info.done:
                return _outcome(info)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"durable task {task_id} did not finish within {timeout} s")
            time.sleep(
                pause if deadline is None else min(pause, max(0.0, deadline - time.monotonic()))
            )
            pause = min(pause * 2, 0.1)

    # -- shutdown -------------------------------------------------------------------------------
    def stop_claiming(self) -> None:
        if self._worker is not None:
            self._worker.claiming = False

    def release_unfinished(self) -> list[Any]:
        """Give every running attempt back to the store, untried, so another worker
        takes it at once; return their engine tasks for the runtime to cancel."""
        worker, thread = self._worker, self._thread
        if worker is None or thread is None or not worker.active:
            return []
        tasks = worker.release_all()
        owner = thread.owner
        try:
            released = thread.call(lambda s: s.release(owner, time.time()), write=True).result(10)
        except Exception as exc:  # noqa: BLE001 (their leases expire instead)
            from .._runtime import logger

            logger.error("offload: releasing running durable tasks failed: %s", exc)
        else:
            if released:
                from .._runtime import logger

                logger.warning(
                    "offload: %d durable tasks still running at shutdown were released"
                    " for another worker",
                    released,
                )
        return tasks

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued (the outcomes of attempts that just ended too) and
        close the store."""
        self.closed = True
        self.stop_claiming()
        thread = self._thread
        if thread is not None:
            if self._worker is not None:
                self._worker.wait_outcomes(timeout)
            thread.stop(timeout)

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's store thread and connection are not ours,
        nor its lock (another thread of the parent may have held it, opening the store)."""
        self._thread = None
        self._worker = None
        self._lock = threading.Lock()


def _result(future: concurrent.futures.Future[Any], timeout: float | None, what: str) -> Any:
    """future.result(timeout), with the builtin TimeoutError on every CPython (3.10's
    concurrent.futures has its own)."""
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        raise TimeoutError(f"{what} within {timeout} s") from None


def _outcome(info: DurableInfo) -> Any:
    if info.state != "succeeded":
        raise DurableTaskFailed(info)
    if info.result_error is not None:
        raise ValueError(
            f"durable task {info.name} (id {info.id}) succeeded, but its result can't be"
            f" read here: {info.result_error}"
        )
    if info.error_type == "ResultNotStored":
        raise ValueError(
            f"durable task {info.name} (id {info.id}) succeeded, but its result was not"
            f" stored: {info.error}"
        )
    return info.result


class _Plan:
    """What a lane's spec means for each spawn, worked out once (the spawn path reads
    plain attributes)."""

    __slots__ = (
        "at",
        "backoff",
        "delay",
        "key",
        "max_attempts",
        "name",
        "on_duplicate",
        "rejects",
        "retry_on",
        "sync_commit",
        "timeout",
    )

    def __init__(self, spec: dict[str, Any]) -> None:
        retries = spec.get("retries", DEFAULT_RETRIES)
        self.name: str | None = spec.get("name")
        self.sync_commit: bool = bool(spec.get("sync_commit", False))
        self.max_attempts: int = retries + 1
        self.timeout: float | None = spec.get("timeout")
        self.backoff = _backoff(spec, retries)
        self.retry_on = _retry_on(spec)
        self.key: str | None = spec.get("key")
        self.on_duplicate: str = spec.get("on_duplicate", "join")
        self.rejects = self.on_duplicate == "reject"
        at = spec.get("at")
        self.at: float | None = None if at is None else float(at)
        self.delay: float = float(spec.get("delay") or 0.0)


def _backoff(spec: dict[str, Any], retries: int) -> tuple[float, float, float, bool] | None:
    if "backoff_initial" in spec:
        return (
            spec["backoff_initial"],
            spec["backoff_factor"],
            spec["backoff_max"],
            bool(spec["backoff_jitter"]),
        )
    if retries:
        b = Backoff()
        return (b.initial, b.factor, b.max, b.jitter)
    return None


def _retry_on(spec: dict[str, Any]) -> tuple[str, ...]:
    types = spec.get("retry_on")
    if not types:
        return ()
    return tuple(f"{t.__module__}.{t.__qualname__}" for t in types)


def _key_bytes(key: str | bytes | None) -> bytes | None:
    if key is None:
        return None
    return key.encode() if isinstance(key, str) else bytes(key)


def _check_id(task_id: Any) -> None:
    if not isinstance(task_id, str) or not task_id:
        raise TypeError(f"a durable task id is a non-empty str, not {task_id!r:.80}")


def _check_ids(task_ids: Any) -> list[str] | None:
    if task_ids is None:
        return None
    if isinstance(task_ids, (str, bytes)) or not isinstance(task_ids, (list, tuple, set)):
        raise TypeError(
            f"task_ids must be a list of ids (or None for all), not {type(task_ids).__name__}"
        )
    ids = list(task_ids)
    for task_id in ids:
        _check_id(task_id)
    return ids


def _check_state(state: Any) -> None:
    states = (*ACTIVE_STATES, "succeeded", "dead", "cancelled")
    if state is not None and state not in states:
        raise ValueError(f"state must be one of {', '.join(states)} or None, got {state!r:.80}")


def _refuse_on_loop() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        "this call would block the running event loop until the store commits; await"
        " task.persisted() / offload.durable.flush() instead (sync_commit=True is for threads)"
    )


# Used by the runtime to validate its options (see _options.py).
def validate_durable(out: dict[str, Any]) -> None:
    from .._options import _check_limit, _check_seconds

    store = out["store"]
    if store is not None:
        if isinstance(store, os.PathLike):
            store = os.fspath(store)
        if not isinstance(store, str):
            raise TypeError(
                f"store must be a URL str (sqlite:///path, memory://, redis://host/0),"
                f" not {type(store).__name__}"
            )
        store_kind(store)
        out["store"] = store
    concurrency = _check_limit(
        "durable_concurrency", out["durable_concurrency"], allow_zero=True, most=100_000
    )
    out["durable_concurrency"] = 0 if concurrency is None else concurrency
    lease = _check_seconds("lease", out["lease"])
    if lease is None or not 0.1 <= lease <= 86_400:
        raise ValueError(f"lease must be between 0.1 and 86400 seconds, got {out['lease']!r}")
    ttl = _check_seconds("result_ttl", out["result_ttl"])
    if ttl is None or ttl > 10 * 365 * 86_400:
        raise ValueError(f"result_ttl must be at most ten years, got {out['result_ttl']!r}")
    if out["durability"] not in ("normal", "full"):
        raise ValueError(f"durability must be 'normal' or 'full', got {out['durability']!r:.80}")
    if not isinstance(out["sync_commit"], bool):
        raise TypeError(f"sync_commit must be a bool, not {type(out['sync_commit']).__name__}")
    if out["signing_key"] is None and os.environ.get("OFFLOAD_SIGNING_KEY"):
        out["signing_key"] = os.environ["OFFLOAD_SIGNING_KEY"]
    make_codec(out["serializer"], out["signing_key"])  # raises on a bad serializer or key


_ = (concurrent.futures, _dt)
