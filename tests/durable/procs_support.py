"""Helpers of test_processes.py: worker processes (`python -m offload worker`) that the
test starts, kills and always reaps, and read-only views of the durable store (SQLite
or Redis, through the store interface) and of the effects file the tasks write (see
proc_tasks.py).

Every wait is bounded: `wait_for` fails the test with what it was waiting for.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from offload.durable._api import open_store
from offload.durable._store import Store, StoreBusy, StoreError, TaskRecord

#: "every task" for a listing (more than any test makes).
ALL = 10**7


def wait_for(
    what: str,
    predicate: Callable[[], Any],
    timeout: float,
    every: float = 0.01,
    detail: Callable[[], str] | None = None,
) -> Any:
    """Poll `predicate` until it returns something true (returned), or fail after
    `timeout` seconds saying `what` never happened (and `detail()`, if given)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            more = f"\n{detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{more}")
        time.sleep(every)


def import_root(module_name: str, module_file: str) -> str:
    """The sys.path entry under which `module_name` (defined in `module_file`) imports:
    the workers get it on PYTHONPATH, so they resolve the same function references
    the producer stored (`durable.proc_tasks:work` or `proc_tasks:work`, whichever way
    pytest imported the tests)."""
    root = Path(module_file).resolve().parent
    for _ in range(module_name.count(".")):
        root = root.parent
    return str(root)


class Processes:
    """The processes a test started: `python -m offload ...` workers and scripts.
    `kill_all()` (the fixture's teardown) SIGKILLs and reaps every one still alive."""

    def __init__(self, tmp: Path, pythonpath: str) -> None:
        self.tmp = tmp
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (pythonpath, self.env.get("PYTHONPATH", "")) if p
        )
        self.env["PYTHONUNBUFFERED"] = "1"
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, args: Sequence[str], name: str) -> subprocess.Popen[bytes]:
        """Start `python args...`, its output into tmp/name.log."""
        log = self.tmp / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.tmp,
            )
        self.started.append((proc, log))
        return proc

    def worker(
        self,
        store: str,
        module: str,
        name: str,
        *,
        lease: float,
        concurrency: int = 32,
        shutdown_timeout: float = 5.0,
        threads: int | None = None,
        loop: str = "asyncio",
        ready: bool = True,
    ) -> subprocess.Popen[bytes]:
        """Start a worker on `store`; with `ready`, return once it works the queue."""
        args = [
            "-m",
            "offload",
            "worker",
            "--store",
            store,
            "--import",
            module,
            "--lease",
            str(lease),
            "--concurrency",
            str(concurrency),
            "--shutdown-timeout",
            str(shutdown_timeout),
            "--loop",
            loop,
        ]
        if threads is not None:
            args += ["--threads", str(threads)]
        proc = self.start(args, name)
        if ready:
            self.wait_ready(proc)
        return proc

    def log_of(self, proc: subprocess.Popen[bytes]) -> str:
        for p, log in self.started:
            if p is proc:
                return log.read_text(errors="replace")
        raise KeyError(proc.pid)

    def wait_ready(self, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
        def ready() -> bool:
            if "working" in self.log_of(proc):
                return True
            if proc.poll() is not None:
                raise AssertionError(
                    f"worker {proc.pid} exited ({proc.returncode}):\n{self.log_of(proc)[-3000:]}"
                )
            return False

        wait_for(f"worker {proc.pid} to start", ready, timeout, every=0.02)

    def logs(self) -> str:
        """Every process's output (the tail of each), for a failure's message."""
        parts = []
        for proc, log in self.started:
            text = log.read_text(errors="replace") if log.exists() else ""
            parts.append(f"--- {log.name} (pid {proc.pid}, rc {proc.returncode})\n{text[-2000:]}")
        return "\n".join(parts)

    def kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        if proc.poll() is None:
            proc.send_signal(sig)

    def kill_all(self) -> None:
        for proc, _ in self.started:
            if proc.poll() is None:
                proc.kill()
        for proc, _ in self.started:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL'd
                pass


class StoreView:
    """Looks at a durable store (SQLite or Redis) through the `Store`
    interface, as any other process would read it: one connection, opened on first
    use, closed by `close()` (the fixture's teardown).

    A store that is unreachable for a moment (a Redis restarting, paused, a SQLite
    write lock held past the busy timeout) is asked again, for up to `patience`
    seconds: a fault test reads the store through the fault."""

    def __init__(self, url: str, patience: float = 60.0) -> None:
        self.url = url
        self.patience = patience
        self._store: Store | None = None

    def _ask(self, fn: Callable[[Store], Any]) -> Any:
        deadline = time.monotonic() + self.patience
        while True:
            try:
                if self._store is None:
                    self._store = open_store(self.url, "normal")
                return fn(self._store)
            except StoreBusy:
                pass
            except StoreError:
                if self._store is not None:  # a failure once open: not a passing fault
                    raise
                # (could not open: the store is not reachable yet; ask again)
            if time.monotonic() > deadline:
                raise AssertionError(f"the store {self.url} stayed unreachable")
            time.sleep(0.05)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def by_state(self) -> dict[str, int]:
        """state -> number of tasks, for the states that have any."""
        depths = self._ask(lambda s: s.depths(time.time()))
        return {state: n for state, n in depths.by_state.items() if n}

    def records(self, state: str | None = None) -> list[TaskRecord]:
        return list(self._ask(lambda s: s.tasks(state, ALL)))

    def get(self, task_id: str) -> TaskRecord | None:
        record: TaskRecord | None = self._ask(lambda s: s.get(task_id))
        return record

    def running_of(self, pid: int) -> list[str]:
        """Ids of the tasks a process (its owner id starts with its pid) holds a lease on."""
        mark = f"{pid}-"
        return [
            r.id
            for r in self.records("running")
            if r.state == "running" and (r.owner or "").startswith(mark)
        ]

    def owned(self) -> list[str]:
        """Ids of the tasks any worker still holds."""
        return [r.id for r in self.records() if r.owner]

    def tasks(self) -> dict[str, tuple[str, int, str | None]]:
        """id -> (state, attempt, error_type) of every task."""
        return {r.id: (r.state, r.attempt, r.error_type) for r in self.records()}

    def reclaim_as_of(self, when: float) -> tuple[int, int]:
        """The one write: a reclaim as a worker would make it at wall-clock `when` (a
        lease renewed before `when - lease` has run out by then)."""
        result: tuple[int, int] = self._ask(lambda s: s.reclaim(when))
        return result


class Effects:
    """Read-only views of the effects file the tasks write (see proc_tasks.py)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with closing(sqlite3.connect(self.path, timeout=30.0)) as db:
            return db.execute(sql, params).fetchall()

    def runs(self) -> list[tuple[str, int, float]]:
        return [tuple(r) for r in self.query("SELECT task_key, pid, t FROM runs ORDER BY t")]

    def effects(self) -> dict[str, int]:
        """task_key -> number of effect rows."""
        return dict(self.query("SELECT task_key, count(*) FROM effects GROUP BY task_key"))


def run_cli(processes: Processes, *args: str, timeout: float = 60.0) -> str:
    """`python -m offload args...` to its end; its output (fails on a non-zero exit)."""
    done = subprocess.run(
        [sys.executable, "-m", "offload", *args],
        capture_output=True,
        env=processes.env,
        cwd=processes.tmp,
        timeout=timeout,
        check=False,
    )
    out = done.stdout.decode(errors="replace")
    assert done.returncode == 0, f"offload {args} exited {done.returncode}:\n{out}\n{done.stderr!r}"
    return out
