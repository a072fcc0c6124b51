"""The processes lane: CPU-bound callables in worker processes.

The engine (C) owns these tasks like any other: registry, limits, statistics,
drain. This module is only the executor behind the lane. It reuses the stdlib's
multiprocessing for the processes themselves (forkserver start, pickling,
connections) but not ProcessPoolExecutor, for two reasons:

* each worker has its own pipe, so when one dies (kill -9, OOM, a segfault in a C
  library) we know exactly which task it was running: that task alone fails with
  `ProcessDied`, the tasks it had not started go to another worker, and a fresh
  worker replaces it (ProcessPoolExecutor breaks the whole pool instead);
* small tasks travel in batches: one pipe write carries many tasks to a worker.

A dispatcher thread sends batches; a collector thread reads results and watches
worker sentinels. Both block in the kernel without the GIL.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any

from ._options import safe_repr

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from ._engine import Task

logger = logging.getLogger("offload")

#: At most this many tasks in one message to a worker.
MAX_BATCH = 64


class ProcessDied(RuntimeError):
    """The worker process running the task died (killed by a signal, crashed, exited)."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process, as text."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


# --- the call site --------------------------------------------------------------------------


def prepare(target: Any, args: tuple[Any, ...] | None, kwargs: dict[str, Any] | None) -> bytes:
    """Pickle a call for a worker now, so what can't cross processes fails at spawn()."""
    try:
        return pickle.dumps((target, args or (), kwargs or {}), pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise TypeError(
            f"offload.processes needs a picklable target and arguments, and {safe_repr(target)} with"
            f" its arguments is not ({type(exc).__name__}: {exc}); define the function at"
            " module level and pass plain data"
        ) from exc


# --- the worker process ---------------------------------------------------------------------


def _safe_str(obj: object) -> str:
    """str(obj) for a message; a user's __str__ that raises must not kill a worker."""
    try:
        return str(obj)
    except BaseException:  # noqa: BLE001 (any failure of user code)
        return f"<{_type_name(obj)} object (its str() failed)>"


def _type_name(obj: object) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _portable(exc: BaseException) -> tuple[BaseException, str]:
    """The exception, made picklable, and its traceback as text (pickle drops both
    __traceback__ and __cause__, so the text travels beside it). Nothing of the user's
    exception (its __str__, __reduce__, __init__) may raise out of here."""
    try:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except BaseException:  # noqa: BLE001
        text = f"{_type_name(exc)} (its traceback could not be formatted)\n"
    try:
        pickle.loads(pickle.dumps(exc))
        portable = exc
    except BaseException:  # noqa: BLE001 (any pickling failure: send a description instead)
        portable = RuntimeError(
            f"{_type_name(exc)}: {_safe_str(exc)} (the exception was not picklable)"
        )
    portable.__traceback__ = None
    return portable, text


def _with_remote_traceback(failure: tuple[BaseException, str]) -> BaseException:
    exc, text = failure
    exc.__cause__ = RemoteTraceback(f'\n"""\n{text}"""')
    return exc


#: A message from a worker: (task id, ok, the value's type name, the value pickled). The
#: value is pickled on its own so that a value the parent can't unpickle (an exception
#: class whose __init__ takes other arguments, a class the parent can't import) fails
#: that task alone, naming the type, instead of the message.
Message = tuple[int, bool, str, bytes]


def _run_one(tid: int, payload: bytes) -> bytes:
    try:
        fn, args, kwargs = pickle.loads(payload)
        ok, value = True, fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 (SystemExit, KeyboardInterrupt: fail the task)
        ok, value = False, _portable(exc)
    message: Message
    try:
        kind = _type_name(value if ok else value[0])
        message = (tid, ok, kind, pickle.dumps(value, pickle.HIGHEST_PROTOCOL))
    except BaseException as exc:  # noqa: BLE001 (whatever pickling raised, the task fails with it)
        error = TypeError(
            f"the task's {'result' if ok else 'exception'}"
            f" ({_type_name(value if ok else value[0])}) could not be"
            f" pickled back: {_type_name(exc)}: {_safe_str(exc)}"
        )
        message = (tid, False, _type_name(error), pickle.dumps(_portable(error)))
    return pickle.dumps(message, pickle.HIGHEST_PROTOCOL)


def worker_main(conn: Connection) -> None:
    """A worker: run batches of (task id, payload) in order, one result message each.

    A result goes back as soon as its task ends, so a worker killed mid-batch loses
    only the task it was running.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    while True:
        try:
            batch = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        if batch is None:
            return
        for tid, payload in batch:
            conn.send_bytes(_run_one(tid, payload))


# --- the parent side ------------------------------------------------------------------------


class _Worker:
    def __init__(self, ctx: Any, index: int) -> None:
        parent_end, child_end = multiprocessing.Pipe(duplex=True)
        self.conn: Connection = parent_end
        self.process: BaseProcess = ctx.Process(
            target=worker_main, args=(child_end,), name=f"offload-proc-{index}", daemon=True
        )
        self.process.start()
        child_end.close()
        #: Tasks sent to this worker, in the order it runs them.
        self.inflight: collections.OrderedDict[int, Task[Any]] = collections.OrderedDict()
        #: Killed by a task's timeout: gets no more work; its exit fails nothing.
        self.killed = False


def pool_size(size: int | None) -> int:
    """Worker processes of a pool: the `processes` option, else one per CPU."""
    return size or os.cpu_count() or 1


def _start_method() -> str:
    # forkserver: fork() of a process running C threads could copy a held lock.
    return "forkserver" if sys.platform.startswith("linux") else "spawn"


class ProcessPool:
    """The executor behind one runtime's processes lane (started on first use)."""

    def __init__(self, size: int | None) -> None:
        self.size = pool_size(size)
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._queue: collections.deque[Task[Any]] = collections.deque()
        self._workers: list[_Worker] = []
        self._stopping = False
        self._started = False
        self._threads: list[threading.Thread] = []
        self._ctx: Any = None
        self._forked = False
        self._next_index = 0
        # The collector wakes when the worker set changes (a pipe it can watch); made
        # on first use, like the workers: most runtimes never use this lane.
        self._changed_r: Connection
        self._changed_w: Connection

    # -- called by the engine (with the GIL, from any thread; must not block) --------------
    def start_task(self, task: Task[Any]) -> None:
        with self._lock:
            if self._stopping:
                raise RuntimeError("the processes lane is shutting down")
            self._queue.append(task)
            if not self._started:
                self._start_locked()
            self._wakeup.notify()

    def kill_task(self, task: Task[Any]) -> None:
        """`task` reached its timeout: kill the worker running it (the engine fails or
        retries the task). The tasks batched behind it never started: they go back to
        the front of the queue. A new worker replaces the killed one."""
        with self._lock:
            worker = next((w for w in self._workers if w.inflight.get(task.id) is task), None)
            if worker is None:
                return  # not running here (it just finished, or never reached a worker)
            worker.killed = True
            rest = [t for tid, t in worker.inflight.items() if tid != task.id]
            worker.inflight.clear()
            self._queue.extendleft(reversed(rest))
            self._wakeup.notify()
        worker.process.kill()  # its sentinel wakes the collector, which replaces it

    def _start_locked(self) -> None:
        self._started = True
        self._changed_r, self._changed_w = multiprocessing.Pipe(duplex=False)
        # A forked child can't use its parent's forkserver: it starts fresh interpreters.
        self._ctx = multiprocessing.get_context("spawn" if self._forked else _start_method())
        for name, body in (("dispatch", self._dispatch_loop), ("collect", self._collect_loop)):
            thread = threading.Thread(target=body, name=f"offload-proc-{name}", daemon=True)
            self._threads.append(thread)
            thread.start()

    # -- dispatcher thread --------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        self._grow()
        while True:
            with self._lock:
                while not self._stopping and not (self._queue and self._idle_workers()):
                    self._wakeup.wait()
                if self._stopping:
                    return
                sends = self._plan_batches()
            for worker, batch in sends:
                self._send(worker, batch)

    def _idle_workers(self) -> list[_Worker]:
        return [w for w in self._workers if not w.inflight and not w.killed]

    def _plan_batches(self) -> list[tuple[_Worker, list[Task[Any]]]]:
        """Share the queue among idle workers: one task each when few wait, batches when many."""
        idle = self._idle_workers()
        per_worker = max(1, min(MAX_BATCH, -(-len(self._queue) // len(idle))))
        sends = []
        for worker in idle:
            batch: list[Task[Any]] = []
            while self._queue and len(batch) < per_worker:
                task = self._queue.popleft()
                # False: cancelled while it waited; "running": requeued from a worker
                # that died or was killed before it started this one.
                if task._set_running() or task.state == "running":
                    batch.append(task)
                    worker.inflight[task.id] = task
            if batch:
                sends.append((worker, batch))
        return sends

    def _send(self, worker: _Worker, batch: list[Task[Any]]) -> None:
        message = pickle.dumps([(t.id, t._args[0]) for t in batch], pickle.HIGHEST_PROTOCOL)
        try:
            worker.conn.send_bytes(message)
        except OSError:
            pass  # the worker died: the collector sees its sentinel and settles the batch

    def _grow(self) -> None:
        """Start workers up to the pool size (outside the lock: starting one takes ms)."""
        while True:
            with self._lock:
                if self._stopping or len(self._workers) >= self.size:
                    break
                index = self._next_index
                self._next_index += 1
            try:
                worker = _Worker(self._ctx, index)
            except Exception as exc:
                logger.exception("offload: could not start a worker process")
                self._fail_queue_if_no_workers(exc)
                break
            with self._lock:
                late = self._stopping
                if not late:
                    self._workers.append(worker)
                    self._wakeup.notify()
            if late:  # stop() ran while it started: it never saw this worker
                worker.process.kill()
                worker.process.join(1.0)
                worker.conn.close()
                _release(worker.process)
                break
            try:
                self._changed_w.send_bytes(b"")
            except OSError:
                pass  # the pool stopped meanwhile (stop() closed it)

    def _fail_queue_if_no_workers(self, exc: Exception) -> None:
        """Without any worker, queued tasks would wait forever: fail them, saying why."""
        with self._lock:
            if self._workers:
                return
            queued = list(self._queue)
            self._queue.clear()
        for task in queued:
            error = RuntimeError(f"the processes lane could not start a worker process: {exc}")
            error.__cause__ = exc
            task._set_exception(error)

    # -- collector thread ---------------------------------------------------------------------
    def _collect_loop(self) -> None:
        """Never ends before the pool stops: without it every task of the lane would
        stay running forever, so an unexpected error is logged and the loop goes on."""
        while True:
            try:
                if not self._collect_once():
                    self._changed_r.close()
                    return
            except Exception:
                logger.exception("offload: the processes lane's collector failed; continuing")
                time.sleep(0.05)

    def _collect_once(self) -> bool:
        """Wait for results or worker exits and handle them; False when the pool stopped."""
        with self._lock:
            if self._stopping and not any(w.inflight for w in self._workers):
                return False
            workers = list(self._workers)
        waitables: list[Any] = [self._changed_r]
        for w in workers:
            waitables += [w.conn, w.process.sentinel]
        ready = multiprocessing.connection.wait(waitables, timeout=0.5)
        if self._changed_r in ready:
            self._changed_r.recv_bytes()
        for w in workers:
            if w.conn in ready:
                self._read_results(w)
            if w.process.sentinel in ready:
                self._on_worker_exit(w)
        return True

    def _read_results(self, worker: _Worker) -> None:
        try:
            while worker.conn.poll():
                tid, ok, kind, data = pickle.loads(worker.conn.recv_bytes())
                ok, value = _unpickle_outcome(ok, kind, data)
                self._settle(worker, tid, ok, value)
        except (EOFError, OSError):
            return  # it died; its sentinel says so

    def _settle(self, worker: _Worker, tid: int, ok: bool, value: Any) -> None:
        """Give a task its outcome; `value` is the result, or (exception, traceback text)."""
        with self._lock:
            task = worker.inflight.pop(tid, None)
            if not worker.inflight:
                self._wakeup.notify()
        if task is None:
            return
        if ok:
            task._set_result(value)
        else:
            task._set_exception(_with_remote_traceback(value))

    def _on_worker_exit(self, worker: _Worker) -> None:
        self._read_results(worker)  # results it sent before dying still count
        worker.process.join(0)
        code = worker.process.exitcode
        pid = worker.process.pid
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)
            running = list(worker.inflight.values())
            worker.inflight.clear()
            stopping = self._stopping
        worker.conn.close()
        if not stopping:  # stopping: stop() still joins it, and releases it after
            _release(worker.process)
        if running:
            # It ran its batch in order: the first task without a result killed it; the
            # rest never started, so they go back to the front of the queue.
            victim, unstarted = running[0], running[1:]
            if stopping:
                victim._set_exception(asyncio.CancelledError())
            else:
                victim._set_exception(ProcessDied(_death_message(pid, code)))
            with self._lock:
                self._queue.extendleft(reversed(unstarted))
                self._wakeup.notify()
            if stopping:
                return
            logger.warning(  # (a worker killed for a timeout has nothing in flight)
                "offload: worker process %s died (%s); task %r failed, %d requeued",
                pid,
                _exit_reason(code),
                victim.name,
                len(unstarted),
            )
        if not stopping:
            self._grow()

    # -- shutdown -------------------------------------------------------------------------------
    def stop(self, timeout: float) -> list[str]:
        """Stop the workers; kill those still busy after `timeout`. Returns what was stuck."""
        with self._lock:
            self._stopping = True
            self._wakeup.notify_all()
            workers = list(self._workers)
            started = self._started
        for w in workers:
            try:
                w.conn.send_bytes(pickle.dumps(None))
            except OSError:
                pass
        stuck = []
        deadline = time.monotonic() + timeout
        for w in workers:
            w.process.join(max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                names = [t.name for t in w.inflight.values()]
                stuck.append(
                    f"worker process {w.process.pid} still ran {names} at shutdown; it was killed"
                )
                w.process.kill()
                w.process.join(1.0)
        if started:
            try:
                self._changed_w.send_bytes(b"")
            except OSError:
                pass  # the collector already ended (and closed the read end)
        for thread in self._threads:
            thread.join(1.0)
        with self._lock:
            # Never started (queued, or requeued from a dead worker) or killed while
            # running: cancelled, not failed, so shutdown names them as unfinished.
            left = list(self._queue) + [t for w in workers for t in w.inflight.values()]
            self._queue.clear()
        for task in left:
            task._set_exception(asyncio.CancelledError())
        for w in workers:
            w.conn.close()
            _release(w.process)
        if started:
            self._changed_w.close()  # the read end is the collector's to close, on its way out
        return stuck

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's workers and threads are not ours."""
        self._workers = []
        self._threads = []
        self._queue.clear()
        self._started = False
        self._stopping = False
        self._forked = True
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)


def _release(process: BaseProcess) -> None:
    """Close an exited worker's Process object: its sentinel pipe would stay open (an fd
    per worker ever started) until the object happened to be collected."""
    try:
        process.close()
    except ValueError:
        pass  # still running (a kill not yet reaped): the object closes it when collected


def _unpickle_outcome(ok: bool, kind: str, data: bytes) -> tuple[bool, Any]:
    """A worker's result or (exception, traceback text), unpickled here in the parent; one
    that can't be becomes a failure naming its type and why (never an exception here)."""
    try:
        return ok, pickle.loads(data)
    except BaseException as exc:  # noqa: BLE001 (user code runs in unpickling: any error)
        error = TypeError(
            f"the task's {'result' if ok else 'exception'} of type {kind} could not be"
            f" unpickled in the parent process ({_type_name(exc)}: {_safe_str(exc)});"
            " a result or exception must be picklable both ways (an exception class whose"
            " __init__ takes other arguments than its args can't be rebuilt)"
        )
        return False, (error, f"{kind} (not rebuilt in the parent)\n")


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _death_message(pid: int | None, code: int | None) -> str:
    return (
        f"the worker process (pid {pid}) running this task died ({_exit_reason(code)}); "
        "the lane replaced it. The task may have crashed it (a segfault in a C library, "
        "os._exit) or the OS killed it (OOM killer, kill -9)"
    )
