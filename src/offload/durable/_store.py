"""The durable store's one interface: what the SQLite store (`_sqlite.py`) and the
Redis store (`_redis.py`) both implement, and the records that cross it.

Every method is blocking and is called only from the runtime's store thread
(`_thread.py`), which owns the store object: a store needs no locks of its own.
Writes are grouped: the thread opens `batch()` and, inside it, makes the calls of one
group commit (enqueues, outcomes, renewals, claims). On a store with `atomic_batches`
(SQLite) either all of them are committed or, if the context raises, none is; on one
without (Redis) each call is atomic by itself and safe to repeat, and the thread
knows that an enqueue that returned was written even if a later call failed.

Times are wall-clock seconds (`time.time()`): several processes share one store.

States of a stored task:
  queued     waiting; `eta` is when it may run (a delay, an `at=`, a retry's backoff)
  running    claimed by `owner` until `lease_until`, at attempt `attempt`
  succeeded  done; `result` kept until `expires`
  dead       in the dead-letter set: its last attempt failed, or it could not be
             decoded, or its function no longer imports (`error` says which)
  cancelled  cancelled while queued (or asked to stop while running, and it did)
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

#: The states a stored task can be in (see above).
STATES = ("queued", "running", "succeeded", "dead", "cancelled")
#: States in which a dedup key is held.
ACTIVE_STATES = ("queued", "running")


class StoreError(RuntimeError):
    """The durable store failed (unwritable path, disk full, a newer schema, ...)."""


class StoreFull(StoreError):
    """The store's disk (or its size limit) is full: the write was not made."""


class StoreBusy(StoreError):
    """The store can't take the write now: another SQLite connection held the lock
    past the busy timeout, or Redis is unreachable, restarting or busy. The same write
    can be tried again (nothing was written, or the write is safe to repeat)."""


@dataclass(slots=True)
class NewTask:
    """A task to enqueue, as `offload.durable.spawn` built it."""

    id: str
    fn: str  # "module:qualname"
    name: str
    payload: bytes  # the encoded (args, kwargs)
    codec: str  # "msgpack" or "pickle" (signed)
    eta: float  # when it may first run
    max_attempts: int  # retries + 1
    timeout: float | None
    backoff: tuple[float, float, float, bool] | None  # Backoff(initial, factor, max, jitter)
    retry_on: tuple[str, ...]  # "module.QualName" of the exception types worth a retry
    created: float
    key: str | None = None
    on_duplicate: str = "join"  # "join", "reject" or "replace"
    #: Set by `enqueue`: the id of the task already holding `key` (join/reject), or None.
    duplicate_of: str | None = None
    #: The producer's handle (not stored): the store thread marks it committed.
    handle: Any = field(default=None, repr=False, compare=False)
    #: The same task as one JSON array, encoded by the producer (`encode_row`), so the
    #: store thread spends no GIL time per task: a store inserts many at once from it.
    row: bytes = field(default=b"", repr=False, compare=False)


@dataclass(slots=True)
class SlotFire:
    """A durable periodic schedule's run for `slot` (its due wall-clock time): every
    process running the schedule sends one; `Store.fire_slot` lets one through."""

    schedule: str
    slot: float
    task: NewTask


@dataclass(slots=True)
class Claimed:
    """A task this worker now holds a lease on, at attempt `attempt` (counted from 1)."""

    id: str
    fn: str
    name: str
    payload: bytes
    codec: str
    attempt: int
    max_attempts: int
    timeout: float | None
    backoff: tuple[float, float, float, bool] | None
    retry_on: tuple[str, ...]
    created: float


@dataclass(slots=True)
class Outcome:
    """How an attempt ended, written with a fenced ack: only if `owner` still holds the
    lease at `attempt`.

    kind: "succeeded" (result), "retry" (back to queued at `eta`), "dead" (error),
    "cancelled", or "released" (given back untried: the attempt does not count).
    """

    id: str
    attempt: int
    kind: str
    result: bytes | None = None
    error_type: str | None = None
    error: str | None = None
    eta: float = 0.0


@dataclass(slots=True)
class TaskRecord:
    """What `offload.durable.get()` and the operators' commands read."""

    id: str
    fn: str
    name: str
    state: str
    attempt: int
    max_attempts: int
    key: str | None
    codec: str
    created: float
    eta: float
    started: float | None
    finished: float | None
    owner: str | None
    lease_until: float | None
    cancel_requested: bool
    result: bytes | None
    error_type: str | None
    error: str | None


@dataclass(slots=True)
class Depths:
    """Queue depths for `python -m offload status`, the status router and the dashboard."""

    by_state: dict[str, int]
    ready: int  # queued and due now
    scheduled: int  # queued with a future eta
    leases: int  # running tasks with a live lease
    expired_leases: int  # running tasks whose lease ran out (a reclaim will requeue them)
    oldest_ready_age: float | None  # seconds the oldest due task has waited


class Store(Protocol):
    """One durable store (an open connection to it). See the module docstring."""

    url: str
    #: Whether a `batch()` is one transaction (see the module docstring).
    atomic_batches: bool

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """One write transaction: all the calls inside commit together, or none."""
        ...

    def enqueue(self, tasks: Sequence[NewTask], now: float) -> None:
        """Insert `tasks`. A task whose `key` is held by an active task is not inserted:
        with on_duplicate "join" or "reject" its `duplicate_of` is set to the holder's
        id; with "replace" the holder is cancelled (or asked to stop, if running) and
        gives the key up, and the new task is inserted."""
        ...

    def claim(self, owner: str, n: int, now: float, lease: float) -> list[Claimed]:
        """Take up to `n` due queued tasks, oldest eta first: each becomes running,
        owned by `owner` until `now + lease`, its attempt counted."""
        ...

    def renew(self, owner: str, ids: Sequence[str], now: float, lease: float) -> list[str]:
        """Extend to `now + lease` the leases `owner` holds on `ids` (the attempts it is
        still running: a lease whose attempt ended, its outcome lost, must expire);
        return the ids of those whose cancellation was requested."""
        ...

    def finish(self, owner: str, outcomes: Sequence[Outcome], now: float, ttl: float) -> list[str]:
        """Write outcomes with a fenced ack; return the ids whose lease `owner` no
        longer held (their outcome was not written). Results expire after `ttl`."""
        ...

    def release(self, owner: str, now: float) -> int:
        """Give back every task `owner` holds, untried (attempt not counted), due now."""
        ...

    def reclaim(self, now: float) -> tuple[int, int]:
        """Requeue the running tasks whose lease expired (their worker is gone); those
        that used their last attempt go to the dead-letter set. Returns (requeued, dead)."""
        ...

    def next_eta(self, now: float) -> float | None:
        """The earliest eta of a queued task not yet due, or None."""
        ...

    def changed(self) -> bool:
        """Whether another process (connection) wrote since the last call: cheap."""
        ...

    def watch(self, wake: Callable[[], None]) -> None:
        """Call `wake()`, from any thread, when another process made tasks ready (a
        store that can push that, like Redis); a no-op where `changed()` polls are
        the way (SQLite: a local read). Stopped by close()."""
        ...

    def get(self, task_id: str) -> TaskRecord | None: ...

    def tasks(self, state: str | None, limit: int) -> list[TaskRecord]:
        """Tasks in `state` (all states if None), newest first."""
        ...

    def cancel(self, task_id: str, now: float) -> str:
        """ "cancelled" (it was queued), "requested" (running: its worker is told),
        "finished" (too late) or "unknown"."""
        ...

    def retry_dead(self, task_ids: Sequence[str] | None, now: float) -> int:
        """Move dead-lettered tasks (all if None) back to queued, attempts reset; one
        whose key another task now holds stays dead. Returns how many moved."""
        ...

    def purge(self, state: str, task_ids: Sequence[str] | None) -> int:
        """Delete the tasks in `state` (all if `task_ids` is None, else those ids)."""
        ...

    def purge_expired(self, now: float) -> int:
        """Delete finished tasks whose result expired."""
        ...

    def fire_slot(self, schedule: str, slot: float, task: NewTask, now: float) -> bool:
        """Enqueue `task` for a periodic schedule's `slot` unless some process already
        did: True for the one process that fired it."""
        ...

    def depths(self, now: float) -> Depths: ...

    def open_reader(self) -> Store | None:
        """A second connection to the same store for lookups (get, tasks, depths), used
        on another thread so that they never wait behind a group commit; None when
        lookups must go through the store thread (an in-memory store)."""
        ...

    def check(self) -> None:
        """Raise StoreError if the store is gone from under us (file deleted)."""
        ...

    def close(self) -> None: ...


@contextlib.contextmanager
def no_batch() -> Iterator[None]:
    """A batch() for a store whose every call is already atomic."""
    yield


def display_url(url: str) -> str:
    """A store URL as shown in logs, errors, `status` and the dashboard: a password in
    it (a Redis URL's) is masked."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rpartition("@")[2]
        netloc = f"{parts.username or ''}:***@{host}"
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return url.split("://", 1)[0] + "://***"


_row_encoder = msgspec.json.Encoder()


def encode_row(t: NewTask) -> bytes:
    """`t` as a JSON array: id, fn, name, payload (base64), codec, key, eta,
    max_attempts, timeout, backoff (an array or null), retry_on (an array or null),
    created."""
    return _row_encoder.encode(
        (
            t.id,
            t.fn,
            t.name,
            t.payload,
            t.codec,
            t.key,
            t.eta,
            t.max_attempts,
            t.timeout,
            t.backoff,
            t.retry_on or None,
            t.created,
        )
    )
