"""The store thread: one per runtime with a durable store, named `offload-store-N`. It
owns the `Store` (its connection) and makes every call to it; other threads hand it
work through `inbox`, a `queue.SimpleQueue` (lock-free put from any thread, also
from a signal handler's frame).

One turn of its loop takes everything in the inbox and makes one group commit of it:
new tasks, outcomes of finished attempts, the lease renewal when due, the reclaim of
expired leases when due, and a claim when the worker has room. Then it marks the new
tasks' handles persisted, hands claimed tasks to the worker, and runs the queued
calls (lookups, cancels, operators' commands), each in a batch of its own.

It renews leases on its own clock, so an event loop that blocks (or a task that holds
the GIL in C) does not starve the renewal: the thread needs the GIL only between
SQLite calls, and CPython hands it over within the switch interval.

Lock rules: `_waiters_lock` guards `_waiters` (handles waited on) and is taken by
the store thread once per group and by a waiting caller; it is never held around a
store call. `_closing_lock` makes a call's or flush's put and the close's last look
at the inbox one after the other, so none is left unanswered.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from ._store import Claimed, NewTask, Outcome, SlotFire, Store, StoreBusy, StoreError

logger = logging.getLogger("offload")

#: A store with no reader connection (lookups go through the store thread).
_NO_READER = object()

#: A handle's commit state (`handle._state`).
PENDING, PERSISTED, FAILED = 0, 1, 2

#: How long the thread waits between claims while it has room and nothing changed:
#: from POLL_MIN after activity, doubling up to POLL_MAX when the store stays idle.
POLL_MIN, POLL_MAX = 0.001, 0.05
#: After a failed group (the store locked past its busy timeout or unreachable, an I/O
#: error), the outcomes (and, when it was locked, the new tasks) are kept and tried
#: again after this long; so are the renewal, the reclaim and the claim that were due.
RETRY_AFTER = 0.05
#: Finished tasks whose result expired are deleted this often.
PURGE_EVERY = 60.0
#: The store file is checked for deletion this often.
CHECK_EVERY = 1.0

_thread_counter = 0
_counter_lock = threading.Lock()


class Call:
    """A store call queued for the thread: fn(store) -> result, into `future`."""

    __slots__ = ("fn", "future", "write")

    def __init__(self, fn: Callable[[Store], Any], write: bool) -> None:
        self.fn = fn
        self.write = write
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()


class Barrier:
    """Resolved once every item put before it is committed (or failed)."""

    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: concurrent.futures.Future[None] = concurrent.futures.Future()


class StoreThread:
    """See the module docstring. `worker` (None for a producer) gets claimed tasks."""

    def __init__(
        self,
        open_store: Callable[[], Store],
        *,
        owner: str,
        lease: float,
        result_ttl: float,
        worker: Any = None,
    ) -> None:
        self.inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.owner = owner
        self.lease = lease
        self.result_ttl = result_ttl
        self.worker = worker
        self._open_store = open_store
        self.store: Store | None = None
        self._waiters_lock = threading.Lock()
        self._closing_lock = threading.Lock()  # orders call()/barrier() puts with the close
        self._closing = False
        self._waiters: dict[Any, list[Callable[[], None]]] = {}
        self._outcomes: list[Outcome] = []  # written in the next group
        self._fires: list[SlotFire] = []  # periodic runs, fired in the next group
        self._held: list[NewTask] = []  # new tasks a locked store refused: tried again
        self._barriers: list[Barrier] = []  # flushes waiting for the held tasks
        self._locked = False  # the store is locked past its busy timeout (warned once)
        self._retrying = False  # outcomes are being retried after a failed write (warned once)
        self._stopping = False
        self._started = threading.Event()
        self._open_error: BaseException | None = None
        self.error: StoreError | None = None  # the store is gone: new spawns refused
        now = time.monotonic()
        self._renew_at = now + lease / 3
        self._reclaim_at = now
        self._purge_at = now + PURGE_EVERY
        self._check_at = now + CHECK_EVERY
        self._poll = POLL_MIN
        self._poll_at = now
        self._next_eta: float | None = None
        self._claim_now = True
        #: Until when a failed group's due work (renewal, reclaim, claim) waits: without
        #: it the thread would retry at once, and spin while Redis is unreachable.
        self._failed_until = 0.0
        self.taken_at = now  # when the thread last took its inbox (see _api.BACKLOG)
        #: Set once the thread has done its last take: a put after it is never read (a
        #: plain attribute, cheaper than Thread.is_alive() on the spawn path).
        self.ended = False
        #: Set when a bug escaped the thread's loop: lookups are refused with it too.
        self.broken: StoreError | None = None
        self.committed = 0  # tasks committed, for stats
        self.failed = 0  # tasks refused by the store
        global _thread_counter
        with _counter_lock:
            _thread_counter += 1
            number = _thread_counter
        self._thread = threading.Thread(
            target=self._run, name=f"offload-store-{number}", daemon=True
        )
        #: Lookups (see read()): a one-thread pool and its own connection, made on first use.
        self._reader_lock = threading.Lock()
        self._reader_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._reader_store: Any = None

    # -- life ------------------------------------------------------------------------
    def start(self) -> None:
        """Open the store on the thread and wait for it: an open error is raised here."""
        self._thread.start()
        self._started.wait()
        if self._open_error is not None:
            self._thread.join()
            raise self._open_error

    def stop(self, timeout: float | None = None) -> bool:
        """Commit what is queued, close the store, end the thread. True if it ended."""
        self._close_reader()
        self._stopping = True
        self.inbox.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            return False
        late = [i for i in self._take(0) if type(i) is NewTask]
        if late:  # spawned while the store closed: refused, and said so
            self._group_failed(late, StoreError("the durable store closed before it was written"))
        return True

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def call(
        self, fn: Callable[[Store], Any], *, write: bool = False
    ) -> concurrent.futures.Future[Any]:
        """Run fn(store) on the thread (in a batch of its own if `write`)."""
        item = Call(fn, write)
        with self._closing_lock:
            if not self._closing and self._thread.is_alive():
                self.inbox.put(item)
                return item.future
        item.future.set_exception(StoreError("the durable store is closed"))
        return item.future

    def read(self, fn: Callable[[Store], Any]) -> concurrent.futures.Future[Any]:
        """Run fn(reader) for a lookup on the reader thread (`offload-store-read`), with
        its own connection, so that lookups never wait behind a group commit nor delay
        one; on the store thread when the store has no reader (in memory)."""
        if self.broken is not None:
            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            future.set_exception(self.broken)
            return future
        if not self.alive:
            return self.call(fn)  # refused, with the reason
        with self._reader_lock:
            if self._reader_pool is None and self.alive and self.store is not None:
                self._reader_pool = concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix=f"{self._thread.name}-read"
                )
            pool = self._reader_pool
        if pool is None:
            return self.call(fn)
        try:
            return pool.submit(self._read_on_reader, fn)
        except RuntimeError:  # shut down under us
            return self.call(fn)

    def _read_on_reader(self, fn: Callable[[Store], Any]) -> Any:
        if self._reader_store is None:
            assert self.store is not None
            self._reader_store = self.store.open_reader() or _NO_READER
        if self._reader_store is _NO_READER:
            return self.call(fn).result()
        return fn(self._reader_store)

    def _close_reader(self) -> None:
        with self._reader_lock:
            pool, self._reader_pool = self._reader_pool, None
        if pool is None:
            return

        def close() -> None:
            reader, self._reader_store = self._reader_store, None
            if reader is not None and reader is not _NO_READER:
                reader.close()

        pool.submit(close)
        pool.shutdown(wait=True)

    def barrier(self) -> concurrent.futures.Future[None]:
        item = Barrier()
        with self._closing_lock:
            if not self._closing and self._thread.is_alive():
                self.inbox.put(item)
                return item.future
        item.future.set_result(None)
        return item.future

    def wake(self) -> None:
        """The worker has room again: claim at the next turn."""
        self._claim_now = True
        self.inbox.put(True)

    # -- waiting for handles -------------------------------------------------------------
    def when_settled(self, handle: Any, callback: Callable[[], None]) -> None:
        """Call `callback` (on the store thread, or now) once `handle` is no longer PENDING."""
        with self._waiters_lock:
            if handle._state == PENDING:
                self._waiters.setdefault(handle, []).append(callback)
                return
        callback()

    def _settle(self, handles: list[Any]) -> None:
        with self._waiters_lock:  # (always: a waiter may be registering right now)
            callbacks = [cb for h in handles for cb in self._waiters.pop(h, ())]
        for cb in callbacks:
            try:
                cb()
            except Exception:
                logger.exception("offload: a durable persisted() waiter failed")

    # -- the loop -----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self.store = self._open_store()
        except BaseException as exc:  # noqa: BLE001 (handed to start(), raised there)
            self._open_error = exc
            self.ended = True
            self._started.set()
            return
        self._started.set()
        if self.worker is not None:
            try:
                self.store.watch(self.wake)
            except Exception as exc:  # noqa: BLE001 (the polls of changed() remain)
                logger.warning("offload: the durable store can't notify this worker: %s", exc)
        try:
            while True:
                items = self._take(self._wait_time())
                going_on = self._turn(items)
                del items  # (not kept alive, with its handles, while the thread waits)
                if not going_on:
                    break
        except Exception as exc:  # a bug: say so, refuse new spawns, fail what is queued
            self.error = self.broken = StoreError(
                f"the durable store thread failed: {type(exc).__name__}"
            )
            logger.critical(
                "offload: the durable store thread failed; durable spawns now raise StoreError",
                exc_info=True,
            )
        finally:
            self._close_store()
            self.ended = True

    def _wait_time(self) -> float | None:
        now = time.monotonic()
        if self._outcomes or self._held:
            return RETRY_AFTER
        if now < self._failed_until:  # a group just failed: what was due is still due
            return self._failed_until - now
        times = [self._purge_at, self._check_at]
        if self.worker is not None and not self._stopping:
            times += [self._renew_at, self._reclaim_at]
            if self.worker.room() > 0:
                times.append(self._poll_at)
                if self._next_eta is not None:
                    times.append(now + self._next_eta - time.time())
        return max(0.0, min(times) - now)

    def _take(self, timeout: float | None) -> list[Any]:
        try:
            items = [self.inbox.get(timeout=timeout)]
        except queue.Empty:
            return []
        self.taken_at = time.monotonic()
        get = self.inbox.get_nowait
        try:
            while True:
                items.append(get())
        except queue.Empty:
            pass
        return items

    def _turn(self, items: list[Any]) -> bool:
        """One group commit; False once stopped and everything is written."""
        new: list[NewTask] = []
        calls: list[Any] = []
        stop = False
        for item in items:
            if type(item) is NewTask:
                new.append(item)
            elif type(item) is Outcome:
                self._outcomes.append(item)
            elif type(item) is SlotFire:
                self._fires.append(item)
            elif item is None:
                stop = True
            elif item is not True:
                calls.append(item)
        if self._held:
            new = self._held + new
            self._held = []
        claimed = self._group(new)
        if claimed:
            self.worker.dispatch(claimed)
        if self._barriers and not self._held:
            calls = [*self._barriers, *calls]
            self._barriers = []
        for item in calls:
            if type(item) is Barrier and self._held:  # not committed yet: a flush waits
                self._barriers.append(item)
            else:
                self._run_call(item)
        self._housekeeping()
        if stop or self._stopping:
            self._stopping = True
            if self._outcomes or self._held:  # one last try, then give up on them
                held, self._held = self._held, []
                self._group(held)
                self._fail_held()
                if self._outcomes:
                    logger.error(
                        "offload: %d durable task outcomes could not be written before"
                        " the store closed; those tasks will run again once their lease"
                        " expires",
                        len(self._outcomes),
                    )
            return False
        return True

    def _group(self, new: list[NewTask]) -> list[Claimed]:
        store = self.store
        assert store is not None
        now_wall = time.time()
        now = time.monotonic()
        worker = self.worker if not self._stopping else None
        renew = worker is not None and now >= self._renew_at
        reclaim = worker is not None and now >= self._reclaim_at
        want = worker.room() if worker is not None else 0
        claim = want > 0 and self._claim_due(now, now_wall, bool(new or self._fires))
        outcomes, fires = self._outcomes, self._fires
        if not (new or outcomes or fires or renew or reclaim or claim):
            return []
        cancels: list[str] = []
        fired: list[NewTask] = []
        claimed: list[Claimed] = []
        refused: list[str] = []
        try:
            if self.error is not None and new:
                raise self.error
            with store.batch():
                if new:
                    store.enqueue(new, now_wall)
                    if not store.atomic_batches:  # written, whatever the rest of the group does
                        self._note_etas(new, [])
                        self.committed += len(new)
                        self._persisted(new)
                        new = []
                if outcomes:
                    refused = store.finish(self.owner, outcomes, now_wall, self.result_ttl)
                    if not store.atomic_batches:  # written: said now, whatever comes next
                        self._outcomes = []
                        self._warn_refused(refused)
                        refused = []
                fired = [
                    f.task for f in fires if store.fire_slot(f.schedule, f.slot, f.task, now_wall)
                ]
                if renew:
                    assert worker is not None
                    cancels = store.renew(self.owner, worker.renewable(), now_wall, self.lease)
                if reclaim:
                    requeued, _ = store.reclaim(now_wall)
                    # Our own commit does not change data_version: claim them now.
                    claim = claim or (requeued > 0 and want > 0)
                if claim:
                    claimed = store.claim(self.owner, min(want, 256), now_wall, self.lease)
                    if len(claimed) < min(want, 256):
                        self._next_eta = store.next_eta(now_wall)
        except Exception as exc:  # noqa: BLE001 (any store failure: reported, see _group_failed)
            self._failed_until = time.monotonic() + RETRY_AFTER
            if isinstance(exc, StoreBusy):
                self._store_locked(new, exc)
            else:
                self._group_failed(new, exc)
            return []
        if self._locked or self._retrying:
            self._locked = self._retrying = False
            logger.info("offload: the durable store is writable again")
        self._outcomes = []
        self._fires = []
        self._note_etas(new + fired, outcomes)
        if renew:
            self._renew_at = now + self.lease / 3
        if reclaim:
            self._reclaim_at = now + min(1.0, self.lease / 4)
        if claim:
            self._after_claim(now, len(claimed), min(want, 256))
        if new or fired:
            self.committed += len(new) + len(fired)
            self._persisted(new)
        self._warn_refused(refused)
        if cancels and worker is not None:
            worker.cancel_running(cancels)
        return claimed

    @staticmethod
    def _warn_refused(refused: list[str]) -> None:
        if refused:
            logger.warning(
                "offload: %d durable task outcomes were not written: their lease had"
                " expired and another worker took them over (ids %s)",
                len(refused),
                ", ".join(refused[:5]),
            )

    def _note_etas(self, new: list[NewTask], outcomes: list[Outcome]) -> None:
        """Tasks this process made due later (a delay, a retry's backoff): wake then."""
        etas = [t.eta for t in new] + [o.eta for o in outcomes if o.kind in ("retry", "released")]
        if etas:
            soonest = min(etas)
            if self._next_eta is None or soonest < self._next_eta:
                self._next_eta = soonest

    def _claim_due(self, now: float, now_wall: float, local_new: bool) -> bool:
        store = self.store
        assert store is not None
        if local_new or self._claim_now:
            return True
        if self._next_eta is not None and now_wall >= self._next_eta:
            return True
        if now >= self._poll_at:
            try:
                changed = store.changed()
            except StoreError:  # can't answer now (Redis unreachable): the writes will say so
                changed = False
            if changed:
                return True
            self._poll = min(self._poll * 2, POLL_MAX)
            self._poll_at = now + self._poll
        return False

    def _after_claim(self, now: float, got: int, asked: int) -> None:
        self._claim_now = got == asked  # a full batch: there may be more
        if got:
            self._poll = POLL_MIN
        self._poll_at = now + self._poll

    def _persisted(self, new: list[NewTask]) -> None:
        handles = []
        for task in new:
            handle = task.handle
            if handle is not None:
                handle._duplicate_of = task.duplicate_of
                handle._state = PERSISTED
                handles.append(handle)
        self._settle(handles)

    def _store_locked(self, new: list[NewTask], exc: StoreBusy) -> None:
        """The store can't take writes now (SQLite locked past the busy timeout by
        another connection, Redis unreachable or restarting): keep everything (the
        tasks were accepted) and try again; warn once per episode."""
        self._held = new
        if not self._locked:
            self._locked = True
            logger.warning(
                "offload: %s; %d new durable tasks and %d outcomes are kept, and the"
                " write will retry until the store takes it",
                exc,
                len(new),
                len(self._outcomes),
            )

    def _fail_held(self) -> None:
        """At close: tasks a locked store kept refusing are failed, and said so."""
        if self._held:
            held, self._held = self._held, []
            self._group_failed(
                held,
                StoreBusy("the durable store was still locked or unreachable when it was closed"),
            )
        for barrier in self._barriers:
            if barrier.future.set_running_or_notify_cancel():
                barrier.future.set_result(None)
        self._barriers = []

    def _group_failed(self, new: list[NewTask], exc: Exception) -> None:
        error = exc if isinstance(exc, StoreError) else StoreError(f"durable store error: {exc}")
        if new:
            self.failed += len(new)
            logger.error(
                "offload: %d durable tasks were not persisted (%s); their persisted() and"
                " result() raise it",
                len(new),
                error,
            )
            handles = []
            for task in new:
                if task.handle is not None:
                    task.handle._error = error
                    task.handle._state = FAILED
                    handles.append(task.handle)
            self._settle(handles)
        elif self._outcomes and not self._retrying:
            self._retrying = True
            logger.warning(
                "offload: durable store write failed (%s); %d outcomes are kept and the"
                " write retried until it succeeds",
                error,
                len(self._outcomes),
            )

    def _run_call(self, item: Any) -> None:
        # A caller may cancel its future at any time (asyncio.wait_for does, on a
        # timeout): claim it first, and skip it if it was cancelled.
        if not item.future.set_running_or_notify_cancel():
            return
        if type(item) is Barrier:
            item.future.set_result(None)
            return
        store = self.store
        assert store is not None
        try:
            if item.write:
                with store.batch():
                    result = item.fn(store)
            else:
                result = item.fn(store)
        except BaseException as exc:  # noqa: BLE001 (handed to the caller's future)
            item.future.set_exception(exc)
        else:
            item.future.set_result(result)

    def _housekeeping(self) -> None:
        store = self.store
        assert store is not None
        now = time.monotonic()
        if now >= self._check_at:
            self._check_at = now + CHECK_EVERY
            try:
                store.check()
            except StoreError as exc:
                if self.error is None:
                    logger.error("offload: %s", exc)
                self.error = exc
        if now >= self._purge_at:
            self._purge_at = now + PURGE_EVERY
            try:
                with store.batch():
                    store.purge_expired(time.time())
            except Exception as exc:  # noqa: BLE001 (housekeeping must not stop the thread)
                logger.warning("offload: purging expired durable results failed: %s", exc)

    def _close_store(self) -> None:
        # What was put after the last turn (a spawn or an attempt's end racing the close)
        # is still written; a call or flush put after this point is refused by
        # call()/barrier() instead.
        with self._closing_lock:
            self._closing = True
        leftovers = self._take(0)
        new = [i for i in leftovers if type(i) is NewTask]
        self._outcomes += [i for i in leftovers if type(i) is Outcome]
        if (new or self._outcomes) and self.store is not None:
            self._group(new)
        self._fail_held()
        for item in leftovers:
            if type(item) in (Call, Barrier) and item.future.set_running_or_notify_cancel():
                item.future.set_exception(StoreError("the durable store is closed"))
        if self.store is not None:
            try:
                self.store.close()
            except Exception as exc:  # noqa: BLE001 (closing: report, go on)
                logger.warning("offload: closing the durable store failed: %s", exc)
