"""Guards on every test of the suite, as CPython's asyncio tests and uvloop keep them.

A test fails if asyncio logs lost work ("Task was destroyed but it is pending", "Task
exception was never retrieved"), if an exception escapes to sys.unraisablehook or
threading.excepthook, or if, once it and its fixtures are done, it leaves behind:

* a thread it started (offload's pool and loop threads included: a runtime the test
  made must be shut down by it),
* a child process (multiprocessing's forkserver and resource tracker, shared by the
  whole session, excepted),
* an open file descriptor,
* an unfinished task of any offload runtime.

Leftovers get a grace period to go away by themselves (a pool thread exits a moment
after shutdown returns). The default runtime is process-wide: while it is started and
open its own threads, fds and tasks belong to the session, not to the test that
happened to start it (those tests are few and say so).

The wait helpers every folder shares are in tests/waiting.py.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from redis_server import SESSION_PIDS
from waiting import wait_until

import offload
from offload import _runtime

#: How long leftovers get to go away by themselves.
GRACE = float(os.environ.get("OFFLOAD_TEST_GRACE", "10"))
#: What a test may leave when it asks (`@pytest.mark.leaves("threads", "fds", ...)`).
KINDS = ("threads", "children", "fds", "tasks")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Let the libraries make what they keep for the whole process before the first
    baseline: uvloop's libuv sets up global fds (epoll, io_uring, a signal pipe) and its
    resolver threads on first use."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - the test extra has it
        return

    async def touch() -> None:
        await asyncio.get_running_loop().getaddrinfo("127.0.0.1", 0)

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(touch())
    finally:
        loop.close()


#: A durable store the suite must never make in the working directory (the default
#: store of a durable spawn, or of a default runtime with durable functions declared).
STRAY_STORE = os.path.join(os.getcwd(), "offload.db")
_stray_before = os.path.exists(STRAY_STORE)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Importing the test modules declared their `@offload.task(durable=True)` functions:
    undeclare them, so a test starting the default runtime doesn't open ./offload.db."""
    from offload.durable import _registry

    _registry._declared.clear()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.path.exists(STRAY_STORE) and not _stray_before:
        print(f"\nFAILED: the suite made a durable store in the working directory: {STRAY_STORE}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """No exception may escape to sys.unraisablehook or threading.excepthook unseen."""
    for item in items:
        item.add_marker(
            pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
        )
        item.add_marker(
            pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
        )


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


#: What asyncio logs when work is lost: a task collected while pending, a failure
#: nobody retrieved.
LOST_WORK = ("exception was never retrieved", "Task was destroyed but it is pending")


@pytest.fixture(autouse=True)
def no_lost_work() -> Iterator[None]:
    """Fail the test if asyncio reports a lost task or an unretrieved exception."""
    handler = _Collect()
    asyncio_logger = logging.getLogger("asyncio")
    asyncio_logger.addHandler(handler)
    try:
        yield
    finally:
        gc.collect()
        asyncio_logger.removeHandler(handler)
    text = "\n".join(handler.messages)
    for message in LOST_WORK:
        assert message not in text, f"asyncio logged {message!r}:\n{text[-3000:]}"


@pytest.fixture(autouse=True)
def durable_declarations_restored() -> Iterator[None]:
    """A test's `@offload.task(durable=True)` / durable `@offload.periodic` must not
    make the default runtime of later tests open a store."""
    from offload.durable import _registry

    before = list(_registry._declared)
    yield
    _registry._declared[:] = before


@pytest.fixture
def offload_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """caplog with every record of the `offload` logger (DEBUG and up)."""
    caplog.set_level(logging.DEBUG, logger="offload")
    return caplog


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "no_asan: left out of the ASan run of `make test-sanitize` (the reason is on the test)",
    )
    config.addinivalue_line(
        "markers",
        "leaves(*kinds): the test leaves these resources behind on purpose"
        f" (kinds: {', '.join(KINDS)}); say why beside the marker",
    )


def _fds() -> dict[int, str]:
    found = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            found[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the fd listdir itself used, or closed meanwhile
            pass
    return found


def _session_fds() -> set[int]:
    """fds multiprocessing keeps for the whole session once used."""
    keep = set()
    from multiprocessing import forkserver, resource_tracker

    for owner, attr in (
        (forkserver._forkserver, "_forkserver_alive_fd"),  # type: ignore[attr-defined]
        (resource_tracker._resource_tracker, "_fd"),  # type: ignore[attr-defined]
    ):
        fd = getattr(owner, attr, None)
        if isinstance(fd, int):
            keep.add(fd)
    return keep


def _children() -> dict[int, str]:
    """Live children of this process (zombies included: nobody reaped them)."""
    me, found = os.getpid(), {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if int(name) in SESSION_PIDS:  # the session's shared redis-server
            continue
        if ppid == me and "forkserver" not in cmdline and "resource_tracker" not in cmdline:
            found[int(name)] = cmdline or stat.split()[1]
    return found


def _threads() -> dict[int, str]:
    """The OS threads of this process (threading's view can list exited foreign threads
    as alive), by native id, named as threading knows them or else by their comm."""
    named = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    found = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                comm = f.read().strip()
        except OSError:  # exited meanwhile
            continue
        found[int(tid)] = named.get(int(tid), comm)
    return found


def _default_in_use() -> bool:
    rt = offload.default_runtime()
    return rt.started and not rt.closed


def _unfinished_tasks() -> dict[int, str]:
    found = {}
    for rt in list(_runtime._live_runtimes):
        if rt is offload.default_runtime() and _default_in_use():
            continue
        try:
            tasks = rt._live_tasks()
        except RuntimeError:  # a subclass that never initialised its engine
            continue
        found.update({t.id: f"{t.name!r} ({t.lane}, {t.state})" for t in tasks})
    return found


@dataclass
class _Snapshot:
    threads: dict[int, str] = field(default_factory=_threads)
    children: dict[int, str] = field(default_factory=_children)
    fds: dict[int, str] = field(default_factory=_fds)


def _leftovers(before: _Snapshot, allowed: set[str]) -> dict[str, list[str]]:
    default_busy = _default_in_use()
    left: dict[str, list[str]] = {}
    if "threads" not in allowed:
        left["threads"] = [
            name
            for ident, name in _threads().items()
            if ident not in before.threads and not (default_busy and name.startswith("offload"))
        ]
    if "children" not in allowed:
        left["children"] = [
            f"{pid}: {cmd}" for pid, cmd in _children().items() if pid not in before.children
        ]
    if "fds" not in allowed and not default_busy:
        session = _session_fds()
        left["fds"] = [
            f"{fd} -> {target}"
            for fd, target in _fds().items()
            if before.fds.get(fd) != target and fd not in session
        ]
    if "tasks" not in allowed:
        left["tasks"] = list(_unfinished_tasks().values())
    return {kind: items for kind, items in left.items() if items}


def _young_objects_only() -> None:
    """Collect what is garbage now, then move every object that survived into the
    collector's permanent generation (gc.freeze), so the collections at the end of the
    test walk only the objects made since: whatever the test leaves as garbage is still
    collected (and asyncio's lost-work log, a runtime's release, happen as before), but
    the ~100,000 objects of the imported libraries are not walked twice per test (that
    walk was half of the suite's time). gc.get_objects() then lists only the young ones:
    the tests that count objects compare counts taken within the test."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def no_leftovers(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if it leaves threads, children, fds or offload tasks behind."""
    marker = request.node.get_closest_marker("leaves")
    allowed = set(marker.args) if marker else set()
    unknown = allowed - set(KINDS)
    assert not unknown, f"unknown kinds in @pytest.mark.leaves: {unknown}"
    _young_objects_only()
    before = _Snapshot()
    yield
    left: dict[str, list[str]] = {}

    def clean() -> bool:
        nonlocal left
        gc.collect()
        left = _leftovers(before, allowed)
        return not left

    if not clean() and not wait_until(clean, GRACE):
        details = "; ".join(f"{kind}: {', '.join(items[:8])}" for kind, items in left.items())
        pytest.fail(f"the test left resources behind (after {GRACE:.0f} s): {details}")
