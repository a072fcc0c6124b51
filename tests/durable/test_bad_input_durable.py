"""Bad input to the durable tier (issue 13), each case against a real SQLite store:
the exact exception type at the call site, and a message that says what went wrong.

Runtime options (store, durable_concurrency, lease, result_ttl, durability,
serializer, signing_key, sync_commit), durable controls (`durable.options(...)`),
spawn targets that can't be imported back, blocking calls from an event loop, and
lookups with bad ids/states. Stores that can't be opened (missing directory, no write
permission, not a database, a newer schema, a network filesystem) are here too: a
Runtime opens its store when it starts or on the first durable call, and that call
raises StoreError. An unknown scheme is refused by Runtime() itself.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from engine.support import LOOP_KINDS, run_loop

import offload
from offload.durable import StoreError, _codec, _sqlite


def add(a: int, b: int) -> int:
    return a + b


class Thing:
    def method(self) -> int:
        return 1


#: The codec on this branch may still be the placeholder (branch durable-codec
#: replaces it); cases that depend on the real one are expected to fail until then.
PLACEHOLDER_CODEC = not hasattr(_codec, "MsgpackCodec")
needs_codec = pytest.mark.xfail(
    PLACEHOLDER_CODEC, reason="needs the real codec (branch durable-codec)", strict=True
)


@pytest.fixture
def store(tmp_path: Path) -> str:
    return "sqlite:///" + str(tmp_path / "x.db")


@pytest.fixture
def make(store: str) -> Iterator[Callable[..., offload.Runtime]]:
    made: list[offload.Runtime] = []

    def make(**options: Any) -> offload.Runtime:
        options.setdefault("store", store)
        rt = offload.Runtime(**options)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        if not rt.closed:
            rt.close(5)


# --- Runtime options -----------------------------------------------------------------

BAD_OPTIONS: list[tuple[dict[str, Any], type[BaseException], str]] = [
    ({"store": 42}, TypeError, r"store must be a URL str"),
    ({"store": b"sqlite:///x.db"}, TypeError, r"store must be a URL str"),
    ({"store": "redis2://localhost:6379/0"}, ValueError, r"unknown durable store.*'redis2'"),
    ({"store": "redis://localhost/0?prefix=a{b}"}, ValueError, r"prefix 'a\{b\}' must be"),
    ({"store": "redis://localhost/0?prefix="}, ValueError, r"prefix '' must be"),
    (
        {"store": "redis://localhost:notaport/0"},
        ValueError,
        r"store 'redis://localhost:notaport/0': Port",
    ),
    ({"store": "redis://localhost:6379/abc"}, ValueError, r"the database 'abc' must be a number"),
    ({"store": "redis://[::1/0"}, ValueError, r"store 'redis://\[::1/0': Invalid IPv6"),
    (
        {"store": "redis://localhost/0?db=x"},
        ValueError,
        r"store 'redis://localhost/0\?db=x': Invalid value",
    ),
    ({"store": "postgres://db/x"}, ValueError, r"unknown durable store.*sqlite:///"),
    ({"store": "x.db"}, ValueError, r"unknown durable store.*sqlite:///"),
    ({"store": "sqlite://x.db"}, ValueError, r"unknown durable store"),
    ({"store": "sqlite:///"}, ValueError, r"names no file"),
    ({"store": "sqlite:///:memory:"}, ValueError, r"names no file"),
    ({"durable_concurrency": -1}, ValueError, r"durable_concurrency must be >= 0"),
    ({"durable_concurrency": 1.5}, TypeError, r"durable_concurrency must be an int"),
    ({"durable_concurrency": True}, TypeError, r"durable_concurrency must be an int"),
    ({"durable_concurrency": 10**9}, ValueError, r"durable_concurrency must be in"),
    ({"lease": 0}, ValueError, r"lease must be between 0.1 and 86400"),
    ({"lease": -1}, ValueError, r"lease must be >= 0"),
    ({"lease": float("nan")}, ValueError, r"lease must be a number of seconds >= 0"),
    ({"lease": float("inf")}, ValueError, r"lease must be between"),
    ({"lease": "30"}, TypeError, r"lease must be a number of seconds"),
    ({"lease": None}, TypeError, r"lease must be a number of seconds"),
    ({"result_ttl": -5}, ValueError, r"result_ttl must be >= 0"),
    ({"result_ttl": float("inf")}, ValueError, r"result_ttl must be at most ten years"),
    ({"result_ttl": "1h"}, TypeError, r"result_ttl must be a number of seconds"),
    ({"durability": "fsync"}, ValueError, r"durability must be 'normal' or 'full'"),
    ({"durability": None}, ValueError, r"durability must be 'normal' or 'full'"),
    ({"sync_commit": 1}, TypeError, r"sync_commit must be a bool"),
    ({"sync_commit": "yes"}, TypeError, r"sync_commit must be a bool"),
    pytest.param(  # type: ignore[list-item]
        {"serializer": "json"},
        ValueError,
        r"serializer must be 'msgpack' or 'pickle'",
        marks=needs_codec,
    ),
    pytest.param(  # type: ignore[list-item]
        {"serializer": None},
        TypeError,
        r"serializer must be 'msgpack' or 'pickle'",
        marks=needs_codec,
    ),
    pytest.param(  # type: ignore[list-item]
        {"serializer": "pickle"}, ValueError, r"needs a signing_key", marks=needs_codec
    ),
    pytest.param(  # type: ignore[list-item]
        {"serializer": "pickle", "signing_key": "short"},
        ValueError,
        r"at least",
        marks=needs_codec,
    ),
    pytest.param(  # type: ignore[list-item]
        {"serializer": "pickle", "signing_key": 12345678901234567890},
        TypeError,
        r"signing_key",
        marks=needs_codec,
    ),
]


@pytest.mark.parametrize(("options", "exc", "message"), BAD_OPTIONS)
def test_bad_runtime_option(
    options: dict[str, Any], exc: type[BaseException], message: str
) -> None:
    with pytest.raises(exc, match=message):
        offload.Runtime(**options)


def test_unknown_scheme_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """OFFLOAD_STORE is read when the tier opens: the spawn raises, clearly."""
    monkeypatch.setenv("OFFLOAD_STORE", "postgres://localhost/0")
    rt = offload.Runtime()
    try:
        with pytest.raises(StoreError, match=r"unknown durable store 'postgres://localhost/0'"):
            rt.durable.spawn(add, 1, 2)
    finally:
        rt.close(5)


# --- stores that can't be opened --------------------------------------------------------


def _open(url: str) -> None:
    """Open the store the way a user does: the first spawn (or the runtime's start)."""
    rt = offload.Runtime(store=url)
    try:
        rt.durable.spawn(add, 1, 2)
    finally:
        rt.close(5)


def test_missing_directory(tmp_path: Path) -> None:
    url = "sqlite:///" + str(tmp_path / "nope" / "x.db")
    with pytest.raises(StoreError, match=r"directory .*nope.* does not exist"):
        _open(url)
    assert not (tmp_path / "nope").exists()


def test_unwritable_directory(tmp_path: Path) -> None:
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores the mode bits
            with pytest.raises(StoreError, match=r"is not a directory"):
                _readonly_for_root(locked)
            return
        with pytest.raises(StoreError, match=r"is not writable"):
            _open("sqlite:///" + str(locked / "x.db"))
    finally:
        locked.chmod(0o700)


def _readonly_for_root(directory: Path) -> None:
    """As root mode bits don't stop a write: use a path root can't write either, one
    whose parent is a regular file."""
    (directory / "file").write_text("")
    _open("sqlite:///" + str(directory / "file" / "x.db"))


def test_unwritable_file(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    _open("sqlite:///" + str(path))
    path.chmod(0o400)
    try:
        if os.access(path, os.W_OK):
            pytest.skip("running as root: mode bits don't make a file unwritable")
        with pytest.raises(StoreError, match=r"is not writable"):
            _open("sqlite:///" + str(path))
    finally:
        path.chmod(0o600)


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    path.write_bytes(b"this is not a database, it is a text file " * 200)
    with pytest.raises(StoreError, match=r"cannot open the durable store.*not a database"):
        _open("sqlite:///" + str(path))
    assert path.read_bytes().startswith(b"this is not a database")


def test_newer_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    url = "sqlite:///" + str(path)
    _open(url)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE offload_meta SET value = '99' WHERE key = 'schema_version'")
    db.close()
    with pytest.raises(StoreError, match=r"made by a newer offload \(schema version 99.*upgrade"):
        _open(url)
    with sqlite3.connect(path) as db:  # the store was not touched
        assert db.execute("SELECT value FROM offload_meta").fetchall() == [("99",)]
    db.close()


def test_unreadable_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    url = "sqlite:///" + str(path)
    _open(url)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE offload_meta SET value = 'two' WHERE key = 'schema_version'")
    db.close()
    with pytest.raises(StoreError, match=r"unreadable schema version 'two'"):
        _open(url)


@pytest.mark.parametrize("fstype", ["nfs4", "cifs", "fuse.sshfs"])
def test_network_filesystem_refused(
    fstype: str, store: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("OFFLOAD_ALLOW_NETWORK_FS", raising=False)
    monkeypatch.setattr(_sqlite, "filesystem_type", lambda path: fstype)
    with pytest.raises(
        StoreError, match=rf"network filesystem \({re.escape(fstype)}\).*OFFLOAD_ALLOW_NETWORK_FS=1"
    ):
        _open(store)
    assert not (tmp_path / "x.db").exists()


def test_network_filesystem_override(
    store: str, make: Callable[..., offload.Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OFFLOAD_ALLOW_NETWORK_FS", "1")
    monkeypatch.setattr(_sqlite, "filesystem_type", lambda path: "nfs4")
    rt = make()
    assert rt.durable.spawn(add, 1, 2).result_sync(10) == 3


# --- durable controls --------------------------------------------------------------------

BAD_CONTROLS: list[tuple[dict[str, Any], type[BaseException], str]] = [
    ({"limit": 2}, TypeError, r"durable tasks take no limit="),
    ({"limit_key": "k"}, TypeError, r"durable tasks take no limit_key="),
    ({"lane": "threads"}, TypeError, r"durable tasks take no lane="),
    ({"timeout": -1}, ValueError, r"timeout"),
    ({"timeout": "5"}, TypeError, r"timeout"),
    ({"timeout": float("nan")}, ValueError, r"timeout"),
    ({"retries": -1}, ValueError, r"retries"),
    ({"retries": 1.5}, TypeError, r"retries"),
    ({"retries": True}, TypeError, r"retries"),
    ({"delay": -1}, ValueError, r"delay"),
    ({"delay": "soon"}, TypeError, r"delay"),
    ({"delay": float("nan")}, ValueError, r"delay"),
    ({"at": "tomorrow"}, TypeError, r"at"),
    ({"at": 1.0}, TypeError, r"at= must be a datetime"),
    ({"retry_on": [int]}, TypeError, r"retry_on must be an exception type"),
    ({"retry_on": "ValueError"}, TypeError, r"retry_on must be an exception type"),
    ({"backoff": -1}, ValueError, r"backoff .* must be >= 0"),
    ({"backoff": "x"}, TypeError, r"backoff .* must be a number of seconds"),
    ({"timeout": 0}, ValueError, r"timeout must be > 0"),
    ({"retries": 10**9}, ValueError, r"retries must be at most"),
    ({"key": 5}, TypeError, r"key"),
    ({"key": ""}, ValueError, r"key"),
    ({"on_duplicate": "merge"}, ValueError, r"on_duplicate"),
    ({"name": 5}, TypeError, r"name must be a str"),
    ({"sync_commit": "yes"}, TypeError, r"sync_commit must be a bool"),
    ({"bogus": 1}, TypeError, r"bogus"),
]


@pytest.mark.parametrize(("controls", "exc", "message"), BAD_CONTROLS)
def test_bad_control(
    controls: dict[str, Any],
    exc: type[BaseException],
    message: str,
    make: Callable[..., offload.Runtime],
    tmp_path: Path,
) -> None:
    rt = make()
    with pytest.raises(exc, match=message):
        rt.durable.options(**controls)
    assert not (tmp_path / "x.db").exists()  # a refused control never opened the store


# --- spawn targets and arguments -----------------------------------------------------------


def _closure() -> Callable[[], int]:
    x = 1

    def inner() -> int:
        return x

    return inner


@pytest.mark.parametrize(
    "target",
    [
        lambda: 1,
        _closure(),
        pytest.param(Thing().method, marks=needs_codec),
        pytest.param(None, marks=needs_codec),
    ],
    ids=["lambda", "closure", "bound-method", "partial"],
)
def test_spawn_of_a_non_importable_function(
    target: Any, make: Callable[..., offload.Runtime]
) -> None:
    import functools

    if target is None:
        target = functools.partial(add, 1)
    rt = make()
    before = _rows(rt)
    with pytest.raises(TypeError, match=r"importable|module-level|not"):
        rt.durable.spawn(target)
    assert _rows(rt) == before


def test_spawn_of_a_non_callable(make: Callable[..., offload.Runtime]) -> None:
    rt = make()
    with pytest.raises(TypeError):
        rt.durable.spawn(42)  # type: ignore[call-overload]


def test_arguments_that_do_not_encode(make: Callable[..., offload.Runtime]) -> None:
    rt = make()
    with pytest.raises(TypeError):
        rt.durable.spawn(add, Thing(), 1)
    assert _rows(rt) == 0


# --- blocking from a loop, lookups ------------------------------------------------------------


@pytest.mark.parametrize("loop_kind", LOOP_KINDS)
def test_sync_commit_on_a_loop(loop_kind: str, make: Callable[..., offload.Runtime]) -> None:
    rt = make()

    async def main() -> None:
        with pytest.raises(RuntimeError, match=r"block the running event loop.*persisted"):
            rt.durable.options(sync_commit=True).spawn(add, 1, 2)
        with pytest.raises(RuntimeError, match=r"block the running event loop"):
            rt.durable.flush_sync()

    run_loop(loop_kind, main(), 20)
    assert _rows(rt) == 0  # refused before it was queued


def test_sync_commit_runtime_option_on_a_loop(make: Callable[..., offload.Runtime]) -> None:
    rt = make(sync_commit=True)

    async def main() -> None:
        with pytest.raises(RuntimeError, match=r"sync_commit=True is for threads"):
            rt.durable.spawn(add, 1, 2)

    asyncio.run(main())


@pytest.mark.parametrize("bad", [None, 5, b"abc", "", ["x"]])
def test_lookups_with_a_bad_id(bad: Any, make: Callable[..., offload.Runtime]) -> None:
    rt = make()
    with pytest.raises(TypeError, match=r"a durable task id is a non-empty str"):
        rt.durable.get(bad)
    with pytest.raises(TypeError, match=r"a durable task id is a non-empty str"):
        rt.durable.cancel(bad)
    with pytest.raises(TypeError, match=r"a durable task id is a non-empty str"):
        asyncio.run(rt.durable.aget(bad))


def test_lookup_of_an_unknown_id(make: Callable[..., offload.Runtime]) -> None:
    rt = make()
    assert rt.durable.get("no-such-task") is None
    assert rt.durable.cancel("no-such-task") == "unknown"


@pytest.mark.parametrize("state", ["bogus", "QUEUED", "scheduled ", 3])
def test_tasks_with_a_bad_state(state: Any, make: Callable[..., offload.Runtime]) -> None:
    rt = make()
    with pytest.raises(ValueError, match=r"state must be one of queued"):
        rt.durable.tasks(state=state)
    with pytest.raises(ValueError, match=r"state must be one of"):
        rt.durable.purge(state)


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "10"])
def test_tasks_with_a_bad_limit(limit: Any, make: Callable[..., offload.Runtime]) -> None:
    rt = make()
    with pytest.raises(ValueError, match=r"limit must be an int >= 1"):
        rt.durable.tasks(limit=limit)


def test_spawn_after_close(make: Callable[..., offload.Runtime]) -> None:
    rt = make()
    rt.durable.spawn(add, 1, 2).wait_persisted(10)
    rt.close(5)
    with pytest.raises((StoreError, RuntimeError), match=r"closed"):
        rt.durable.spawn(add, 1, 2)


def _rows(rt: offload.Runtime) -> int:
    path = rt.durable.url[len("sqlite:///") :]
    if not os.path.exists(path):
        return 0
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT count(*) FROM offload_tasks").fetchone()[0])
    finally:
        db.close()
