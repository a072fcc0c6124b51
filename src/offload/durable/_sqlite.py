"""The embedded durable store: one SQLite file in WAL mode, shared safely by every
process on the machine (an app's `uvicorn --workers 4`, standalone workers,
`python -m offload status`). `store="memory://"` is the same store in memory, for tests.

Owns the schema (versioned; checked at open), the SQL of every `Store` call, and the
mapping of SQLite's errors to `StoreError`/`StoreFull`.

Each call makes one or a few `sqlite3_step`s whatever the number of rows: many-row
INSERTs and `UPDATE ... FROM (VALUES ...)` for writes, `json_group_array` for reads.
Python's sqlite3 releases the GIL inside every step and retakes it after, and a busy
thread holds a retaken GIL for up to the 5 ms switch interval: a step per row would
cost a worker up to 5 ms per row while its event loop is busy.

Only the store thread calls in (see `_store.py`), so nothing here locks: SQLite's own
file locks order the processes (`BEGIN IMMEDIATE` takes the write lock at the start of
a group, so a claim's read and update see the same rows).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from ._store import (
    Claimed,
    Depths,
    NewTask,
    Outcome,
    StoreBusy,
    StoreError,
    StoreFull,
    TaskRecord,
    encode_row,
)

T = TypeVar("T")
logger = logging.getLogger("offload")

#: How long a cancelled (or replaced) task's record is kept for lookups, in seconds.
CANCELLED_KEPT = 3600.0

#: The schema this offload writes; a store made by a newer one is refused at open.
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS offload_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS offload_tasks (
    id TEXT PRIMARY KEY,
    fn TEXT NOT NULL,
    name TEXT NOT NULL,
    payload TEXT NOT NULL,
    codec TEXT NOT NULL,
    state TEXT NOT NULL,
    key TEXT,
    eta REAL NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    timeout REAL,
    backoff TEXT,
    retry_on TEXT,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    expires REAL,
    owner TEXT,
    lease_until REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    result BLOB,
    error_type TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS offload_tasks_ready ON offload_tasks (state, eta);
CREATE UNIQUE INDEX IF NOT EXISTS offload_tasks_key ON offload_tasks (key)
    WHERE key IS NOT NULL AND state IN ('queued', 'running');
CREATE INDEX IF NOT EXISTS offload_tasks_expires ON offload_tasks (expires)
    WHERE expires IS NOT NULL;
CREATE TABLE IF NOT EXISTS offload_slots (
    schedule TEXT NOT NULL, slot REAL NOT NULL, PRIMARY KEY (schedule, slot)
) WITHOUT ROWID;
"""

#: Columns of a new row, in the order `_insert_sql` binds them.
_NEW_COLUMNS = (
    "id, fn, name, payload, codec, state, key, eta, max_attempts, timeout, backoff,"
    " retry_on, created"
)
_NEW_ROW = "(?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?)"
#: Many new tasks from one JSON array of `encode_row` arrays, in one step.
_INSERT_ROWS = (
    f"INSERT INTO offload_tasks ({_NEW_COLUMNS}) SELECT "
    + ", ".join(
        "'queued'" if i == "queued" else f"json_extract(value, '$[{i}]')"
        for i in (0, 1, 2, 3, 4, "queued", 5, 6, 7, 8, 9, 10, 11)
    )
    + " FROM json_each(?)"
)
#: The oldest SQLite this SQL runs on (UPDATE ... FROM); checked at open.
MIN_SQLITE = (3, 33, 0)
#: Rows per INSERT or UPDATE (SQLite binds at most 32,766 parameters per statement;
#: fewer statements mean fewer GIL hand-backs per group, see the module docstring).
_CHUNK = 2000


def _text(column: str) -> str:
    """A column as JSON can carry it: a BLOB (a row corrupted by hand or by a bad disk)
    would make json_array fail the whole claim; it becomes null, and the row is
    dead-lettered on its own (SqliteStore.claim)."""
    return f"CASE WHEN typeof({column}) = 'blob' THEN NULL ELSE {column} END"


_CLAIMED_JSON = (
    f"json_array({_text('id')}, {_text('fn')}, {_text('name')}, {_text('payload')},"
    f" {_text('codec')}, attempt + 1, max_attempts, {_text('timeout')}, {_text('backoff')},"
    f" {_text('retry_on')}, {_text('created')}, rid)"
)
_RECORD_COLUMNS = (
    "id, fn, name, state, attempt, max_attempts, key, codec, created, eta, started,"
    " finished, owner, lease_until, cancel_requested, result, error_type, error"
)

#: Filesystems SQLite's locking is not safe on (fcntl locks over the network).
NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs", "lustre"}
)
NETWORK_FUSE = ("fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.rclone")


#: How long a write waits for another process's lock before it fails, and how often
#: it tries meanwhile (see SqliteStore._when_free).
BUSY_TIMEOUT = 10.0
BUSY_POLL_MIN, BUSY_POLL_MAX = 0.0001, 0.002

#: SQLite's primary result codes (the sqlite3 module names them from 3.11 only).
SQLITE_BUSY, SQLITE_LOCKED, SQLITE_FULL = 5, 6, 13


def is_full(exc: BaseException) -> bool:
    """SQLITE_FULL: the disk, or the database's size limit, is full."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF == SQLITE_FULL)
    return "database or disk is full" in str(exc)


def is_busy(exc: BaseException) -> bool:
    """SQLITE_BUSY/LOCKED: another connection held the lock past the busy timeout."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (SQLITE_BUSY, SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def _store_error(what: str, exc: BaseException) -> StoreError:
    if is_full(exc):
        return StoreFull(f"{what}: the store is full ({exc})")
    if is_busy(exc):
        return StoreBusy(f"{what}: {exc}")
    return StoreError(f"{what}: {exc}")


def filesystem_type(path: str) -> str | None:
    """The type of the filesystem holding `path` (Linux: /proc/self/mountinfo)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            mounts = f.read().splitlines()
    except OSError:
        return None
    best, best_type = "", None
    real = os.path.realpath(path)
    for line in mounts:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 5 or not right:
            continue
        mount_point = fields[4].replace("\\040", " ")
        inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, right.split()[0]
    return best_type


def _decode_backoff(text: str | None) -> tuple[float, float, float, bool] | None:
    if not text:
        return None
    initial, factor, most, jitter = json.loads(text)
    return float(initial), float(factor), float(most), bool(jitter)


class SqliteStore:
    """A `Store` on one SQLite file (or in memory). See the module docstring."""

    atomic_batches = True

    def __init__(
        self, url: str, path: str, *, durability: str = "normal", reader: bool = False
    ) -> None:
        self.url = url
        self.path = path
        self._durability = durability
        self._reader = reader  # a lookups-only connection (open_reader)
        #: How long a write waits for another connection's lock (see _when_free).
        self.busy_timeout = BUSY_TIMEOUT
        self._memory = path == ":memory:"
        self._identity: tuple[int, int] | None = None
        self._check_sqlite_version()
        if not self._memory:
            self._check_path()
        try:
            self._db = sqlite3.connect(
                path, timeout=10.0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the durable store {url!r}: {exc}") from None
        try:
            self._setup(durability)
        except sqlite3.Error as exc:
            self._db.close()
            raise _store_error(f"cannot open the durable store {url!r}", exc) from None
        except BaseException:
            self._db.close()
            raise
        self._data_version = self._version()

    # -- opening -----------------------------------------------------------------
    @staticmethod
    def _check_sqlite_version() -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StoreError(
                f"the durable store needs SQLite {'.'.join(map(str, MIN_SQLITE))} or newer;"
                f" this Python's sqlite3 module uses SQLite {sqlite3.sqlite_version}"
            )

    def _check_path(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            what = "is not a directory" if os.path.exists(directory) else "does not exist"
            raise StoreError(
                f"cannot open the durable store {self.url!r}: directory {directory!r} {what}"
            )
        target = self.path if os.path.exists(self.path) else directory
        if not os.access(target, os.W_OK):
            raise StoreError(
                f"cannot open the durable store {self.url!r}: {target!r} is not writable"
            )
        fstype = filesystem_type(directory)
        network = fstype is not None and (
            fstype in NETWORK_FILESYSTEMS or fstype.startswith(NETWORK_FUSE)
        )
        if network and os.environ.get("OFFLOAD_ALLOW_NETWORK_FS") != "1":
            raise StoreError(
                f"the durable store {self.url!r} is on a network filesystem ({fstype}):"
                " SQLite's file locks are not reliable there, so two workers could"
                " run one task at once; put it on a local disk, or use a Redis store"
                " (set OFFLOAD_ALLOW_NETWORK_FS=1 to open it anyway)"
            )

    def _setup(self, durability: str) -> None:
        db = self._db
        if self._reader:
            db.execute("PRAGMA query_only=1")
            self._check_version(self._schema_version())
            db.execute("PRAGMA busy_timeout=0")
            return
        if not self._memory:
            # (SQLite answers "locked" at once, without its busy handler, while another
            # process opening the same new file holds it: `uvicorn --workers N`'s first start)
            mode = self._when_free(lambda: db.execute("PRAGMA journal_mode=WAL").fetchone()[0])
            if str(mode).lower() != "wal":
                raise StoreError(f"the durable store {self.url!r} cannot use WAL mode ({mode})")
        db.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
        db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")  # opening: no hurry
        db.execute("BEGIN IMMEDIATE")
        try:
            version = self._schema_version()
            if version is None:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(
                    "INSERT OR REPLACE INTO offload_meta VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            else:
                self._check_version(version)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if not self._memory:
            st = os.stat(self.path)
            self._identity = (st.st_dev, st.st_ino)
        db.execute("PRAGMA busy_timeout=0")  # from here on, _when_free waits

    def _check_version(self, version: int | None) -> None:
        if version is None:
            raise StoreError(f"the durable store {self.url!r} has no offload schema")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the durable store {self.url!r} was made by a newer offload (schema"
                f" version {version}; this offload knows up to {SCHEMA_VERSION}):"
                " upgrade offload in this environment, or point it at another store"
            )

    def _schema_version(self) -> int | None:
        exists = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='offload_meta'"
        ).fetchone()
        if not exists:
            return None
        row = self._db.execute(
            "SELECT value FROM offload_meta WHERE key='schema_version'"
        ).fetchone()
        if row is None:
            return None
        try:
            return int(row[0])
        except ValueError:
            raise StoreError(
                f"the durable store {self.url!r} has an unreadable schema version {row[0]!r}"
            ) from None

    # -- transactions ------------------------------------------------------------
    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        try:
            self._when_free(lambda: self._db.execute("BEGIN IMMEDIATE"))
        except sqlite3.Error as exc:
            raise _store_error("cannot write to the durable store", exc) from exc
        try:
            yield
        except sqlite3.Error as exc:  # a full disk, an I/O error: say which
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise _store_error("cannot write to the durable store", exc) from exc
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise _store_error("cannot commit to the durable store", exc) from exc

    def _when_free(self, call: Callable[[], T]) -> T:
        """call(), again while another connection holds the lock (SQLITE_BUSY), for up
        to `busy_timeout` seconds.

        SQLite's own busy handler sleeps 1, 2, 5, 10, ... 100 ms between tries: under
        several busy workers a waiter would sleep far longer than the lock is held
        (a group commit holds it about a millisecond). This one polls every
        BUSY_POLL_MIN, doubling up to BUSY_POLL_MAX, the GIL released while it sleeps."""
        deadline = time.monotonic() + self.busy_timeout
        pause = BUSY_POLL_MIN
        while True:
            try:
                return call()
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, BUSY_POLL_MAX)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """A read outside a write transaction (WAL readers wait only for a recovery)."""
        return self._when_free(lambda: self._db.execute(sql, params).fetchall())

    def _json(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run a one-row query whose value is a JSON array; return it decoded."""
        row = self._db.execute(sql, params).fetchone()
        return json.loads(row[0]) if row and row[0] else []

    # -- the producer's side -------------------------------------------------------
    def enqueue(self, tasks: Sequence[NewTask], now: float) -> None:
        rows = [t.row or encode_row(t) for t in tasks if t.key is None]
        if rows:  # one statement (one GIL hand-back) for the whole group
            self._db.execute(_INSERT_ROWS, ((b"[" + b",".join(rows) + b"]").decode(),))
        for t in tasks:
            if t.key is not None:
                self._enqueue_keyed(t, now)

    @staticmethod
    def _new_params(t: NewTask) -> tuple[Any, ...]:
        return (
            t.id,
            t.fn,
            t.name,
            base64.b64encode(t.payload).decode(),
            t.codec,
            t.key,
            t.eta,
            t.max_attempts,
            t.timeout,
            None if t.backoff is None else json.dumps(list(t.backoff)),
            json.dumps(list(t.retry_on)) if t.retry_on else None,
            t.created,
        )

    def _enqueue_keyed(self, t: NewTask, now: float) -> None:
        holder = self._db.execute(
            "SELECT id, state FROM offload_tasks WHERE key = ? AND state IN ('queued', 'running')",
            (t.key,),
        ).fetchone()
        if holder is not None:
            if t.on_duplicate != "replace":
                t.duplicate_of = holder[0]
                return
            self._give_up_key(holder[0], holder[1], now)
        self._db.execute(
            f"INSERT INTO offload_tasks ({_NEW_COLUMNS}) VALUES {_NEW_ROW}", self._new_params(t)
        )

    def _give_up_key(self, task_id: str, state: str, now: float) -> None:
        if state == "queued":
            self._db.execute(
                "UPDATE offload_tasks SET state = 'cancelled', finished = ?, expires = ?,"
                " error_type = 'Replaced', error = 'replaced by a newer task with its key'"
                " WHERE id = ?",
                (now, now + CANCELLED_KEPT, task_id),
            )
        else:  # running: it keeps its row (and lease) but no longer holds the key
            self._db.execute(
                "UPDATE offload_tasks SET cancel_requested = 1, key = NULL WHERE id = ?",
                (task_id,),
            )

    def fire_slot(self, schedule: str, slot: float, task: NewTask, now: float) -> bool:
        # a slot at or below the newest one fired (kept as the high-water mark) is old:
        # a process running late must not fire it again
        cur = self._db.execute(
            "INSERT INTO offload_slots (schedule, slot) SELECT ?, ? WHERE NOT EXISTS"
            " (SELECT 1 FROM offload_slots WHERE schedule = ? AND slot >= ?)",
            (schedule, slot, schedule, slot),
        )
        if cur.rowcount != 1:
            return False
        self.enqueue([task], now)
        self._db.execute(
            "DELETE FROM offload_slots WHERE schedule = ? AND slot < ?", (schedule, slot)
        )
        return True

    # -- the worker's side -----------------------------------------------------------
    def claim(self, owner: str, n: int, now: float, lease: float) -> list[Claimed]:
        rows = self._json(
            f"SELECT json_group_array({_CLAIMED_JSON}) FROM (SELECT rowid AS rid, * FROM offload_tasks"
            " WHERE state = 'queued' AND eta <= ? ORDER BY eta LIMIT ?)",
            (now, n),
        )
        if not rows:
            return []
        self._db.execute(
            "UPDATE offload_tasks SET state = 'running', owner = ?, lease_until = ?,"
            " attempt = attempt + 1, started = ?"
            " WHERE rowid IN (SELECT value FROM json_each(?))",
            (owner, now + lease, now, json.dumps([r[11] for r in rows])),
        )
        claimed = []
        for r in rows:
            try:
                claimed.append(_claimed(r))
            except (ValueError, TypeError, AttributeError) as exc:
                self._dead_letter_corrupt(r[11], r[0], r[2], exc, now)
        return claimed

    def _dead_letter_corrupt(
        self, rowid: int, task_id: Any, name: Any, exc: Exception, now: float
    ) -> None:
        """A row this offload can't read (edited by hand, a bad disk): dead-letter it
        rather than fail every claim that picks it up."""
        error = f"the stored row cannot be read: {type(exc).__name__}: {exc}"
        logger.error(
            "offload: durable task %s (id %s) has a corrupted row (%s) and went to the"
            " dead-letter set",
            name,
            task_id,
            error,
        )
        self._db.execute(
            "UPDATE offload_tasks SET state = 'dead', owner = NULL, lease_until = NULL,"
            " finished = ?, error_type = 'CorruptRow', error = ? WHERE rowid = ?",
            (now, error, rowid),
        )

    def renew(self, owner: str, ids: Sequence[str], now: float, lease: float) -> list[str]:
        held = json.dumps(list(ids))
        self._db.execute(
            "UPDATE offload_tasks SET lease_until = ? WHERE state = 'running' AND owner = ?"
            " AND id IN (SELECT value FROM json_each(?))",
            (now + lease, owner, held),
        )
        return self._json(
            "SELECT json_group_array(id) FROM offload_tasks WHERE state = 'running'"
            " AND owner = ? AND cancel_requested = 1 AND id IN (SELECT value FROM json_each(?))",
            (owner, held),
        )

    def finish(self, owner: str, outcomes: Sequence[Outcome], now: float, ttl: float) -> list[str]:
        held = {
            (task_id, attempt)
            for task_id, attempt in self._json(
                "SELECT json_group_array(json_array(id, attempt)) FROM offload_tasks"
                " WHERE state = 'running' AND owner = ?",
                (owner,),
            )
        }
        refused = [o.id for o in outcomes if (o.id, o.attempt) not in held]
        kept = [o for o in outcomes if (o.id, o.attempt) in held]
        for start in range(0, len(kept), _CHUNK):
            self._write_outcomes(kept[start : start + _CHUNK], now, ttl)
        return refused

    def _write_outcomes(self, outcomes: Sequence[Outcome], now: float, ttl: float) -> None:
        params: list[Any] = []
        for o in outcomes:
            final = o.kind in ("succeeded", "dead", "cancelled")
            # a success clears the error an earlier attempt left (but keeps its own,
            # ResultNotStored); a retry or release keeps the last error for lookups
            clears = o.kind == "succeeded"
            state = {"retry": "queued", "released": "queued"}.get(o.kind, o.kind)
            params += (
                o.id,
                state,
                o.result,
                o.error_type,
                o.error,
                o.eta if not final else now,
                1 if o.kind == "released" else 0,
                now if final else None,
                now + ttl if o.kind in ("succeeded", "cancelled") else None,
                clears,
            )
        rows = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(outcomes))
        self._db.execute(
            "UPDATE offload_tasks SET state = CASE WHEN v.column2 = 'queued'"
            " AND cancel_requested THEN 'cancelled' ELSE v.column2 END, result = v.column3,"
            " error_type = CASE WHEN v.column10 THEN v.column4"
            " ELSE coalesce(v.column4, error_type) END,"
            " error = CASE WHEN v.column10 THEN v.column5 ELSE coalesce(v.column5, error) END,"
            " eta = v.column6, attempt = attempt - v.column7, finished = v.column8,"
            " expires = v.column9, owner = NULL, lease_until = NULL"
            f" FROM (VALUES {rows}) AS v WHERE offload_tasks.id = v.column1",
            params,
        )

    def release(self, owner: str, now: float) -> int:
        # a task asked to stop (cancel(), or a replace= of its key) is not run again
        self._cancel_running("owner = ?", (owner,), now)
        cur = self._db.execute(
            "UPDATE offload_tasks SET state = 'queued', owner = NULL, lease_until = NULL,"
            " attempt = attempt - 1, eta = ? WHERE state = 'running' AND owner = ?",
            (now, owner),
        )
        return cur.rowcount

    def _cancel_running(self, where: str, params: tuple[Any, ...], now: float) -> None:
        """Running tasks matching `where` whose cancel was requested end cancelled,
        instead of going back to the queue (release, reclaim)."""
        self._db.execute(
            "UPDATE offload_tasks SET state = 'cancelled', owner = NULL, lease_until = NULL,"
            " finished = ?, expires = ?, error_type = 'Cancelled', error = 'cancelled on request'"
            f" WHERE state = 'running' AND cancel_requested AND {where}",
            (now, now + CANCELLED_KEPT, *params),
        )

    def reclaim(self, now: float) -> tuple[int, int]:
        lost = (
            "'the worker running attempt ' || attempt || ' stopped renewing its lease"
            " (killed, or hung past the lease)'"
        )
        self._cancel_running("lease_until < ?", (now,), now)
        dead = self._db.execute(
            "UPDATE offload_tasks SET state = 'dead', owner = NULL, lease_until = NULL,"
            f" finished = ?, error_type = 'WorkerLost', error = {lost}"
            " WHERE state = 'running' AND lease_until < ? AND attempt >= max_attempts",
            (now, now),
        ).rowcount
        requeued = self._db.execute(
            "UPDATE offload_tasks SET state = 'queued', owner = NULL, lease_until = NULL,"
            f" eta = ?, error_type = 'WorkerLost', error = {lost}"
            " WHERE state = 'running' AND lease_until < ?",
            (now, now),
        ).rowcount
        return requeued, dead

    def next_eta(self, now: float) -> float | None:
        row = self._db.execute(
            "SELECT min(eta) FROM offload_tasks WHERE state = 'queued' AND eta > ?", (now,)
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def changed(self) -> bool:
        version = self._version()
        if version == self._data_version:
            return False
        self._data_version = version
        return True

    def watch(self, wake: Callable[[], None]) -> None:
        """Nothing pushes: `changed()` is a local read (PRAGMA data_version), polled."""

    def _version(self) -> int:
        return int(self._read("PRAGMA data_version")[0][0])

    # -- lookups and operators ----------------------------------------------------------
    def get(self, task_id: str) -> TaskRecord | None:
        rows = self._read(f"SELECT {_RECORD_COLUMNS} FROM offload_tasks WHERE id = ?", (task_id,))
        return _record(rows[0]) if rows else None

    def tasks(self, state: str | None, limit: int) -> list[TaskRecord]:
        where, params = ("WHERE state = ?", [state]) if state else ("", [])
        rows = self._read(
            f"SELECT {_RECORD_COLUMNS} FROM offload_tasks {where}"
            " ORDER BY rowid DESC LIMIT ?",  # (insertion order: no index needed)
            [*params, limit],
        )
        return [_record(r) for r in rows]

    def cancel(self, task_id: str, now: float) -> str:
        row = self._db.execute(
            "SELECT state FROM offload_tasks WHERE id = ?", (task_id,)
        ).fetchone()
        if row is None:
            return "unknown"
        if row[0] == "queued":
            self._db.execute(
                "UPDATE offload_tasks SET state = 'cancelled', finished = ?, expires = ?"
                " WHERE id = ?",
                (now, now + CANCELLED_KEPT, task_id),
            )
            return "cancelled"
        if row[0] == "running":
            self._db.execute(
                "UPDATE offload_tasks SET cancel_requested = 1 WHERE id = ?", (task_id,)
            )
            return "requested"
        return "finished"

    def retry_dead(self, task_ids: Sequence[str] | None, now: float) -> int:
        # OR IGNORE: a dead task whose key another task holds now (queued or running)
        # stays dead rather than fail the whole retry; the count tells how many moved
        sql = (
            "UPDATE OR IGNORE offload_tasks SET state = 'queued', attempt = 0, eta = ?,"
            " finished = NULL, expires = NULL, cancel_requested = 0 WHERE state = 'dead'"
        )
        if task_ids is None:
            return self._db.execute(sql, (now,)).rowcount
        return self._db.execute(
            sql + " AND id IN (SELECT value FROM json_each(?))", (now, json.dumps(list(task_ids)))
        ).rowcount

    def purge(self, state: str, task_ids: Sequence[str] | None) -> int:
        if task_ids is None:
            return self._db.execute("DELETE FROM offload_tasks WHERE state = ?", (state,)).rowcount
        return self._db.execute(
            "DELETE FROM offload_tasks WHERE state = ? AND id IN (SELECT value FROM json_each(?))",
            (state, json.dumps(list(task_ids))),
        ).rowcount

    def purge_expired(self, now: float) -> int:
        return self._db.execute(
            "DELETE FROM offload_tasks WHERE expires IS NOT NULL AND expires < ?", (now,)
        ).rowcount

    def depths(self, now: float) -> Depths:
        by_state = {state: 0 for state in ("queued", "running", "succeeded", "dead", "cancelled")}
        for state, count in self._read("SELECT state, count(*) FROM offload_tasks GROUP BY state"):
            by_state[state] = count
        [(ready, oldest)] = self._read(
            "SELECT count(*), min(eta) FROM offload_tasks WHERE state = 'queued' AND eta <= ?",
            (now,),
        )
        [(leases, expired)] = self._read(
            "SELECT count(*), coalesce(sum(lease_until < ?), 0) FROM offload_tasks"
            " WHERE state = 'running'",
            (now,),
        )
        return Depths(
            by_state=by_state,
            ready=ready,
            scheduled=by_state["queued"] - ready,
            leases=leases - expired,
            expired_leases=expired,
            oldest_ready_age=None if oldest is None else max(0.0, now - oldest),
        )

    def open_reader(self) -> SqliteStore | None:
        if self._memory:
            return None  # one connection sees an in-memory database
        return SqliteStore(self.url, self.path, durability=self._durability, reader=True)

    def check(self) -> None:
        if self._identity is None:
            return
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise StoreError(
                f"the durable store's file {self.path!r} was deleted while in use: tasks"
                " written since are in a file no other process can open"
            ) from None
        except OSError as exc:  # its directory gone, replaced, or unreadable
            raise StoreError(
                f"the durable store's file {self.path!r} can no longer be found ({exc}):"
                " tasks written since are in a file no other process can open"
            ) from None
        if (st.st_dev, st.st_ino) != self._identity:
            raise StoreError(
                f"the durable store's file {self.path!r} was replaced by another file while in use"
            )

    def close(self) -> None:
        self._db.close()


def _claimed(r: Sequence[Any]) -> Claimed:
    for index, what in ((0, "id"), (1, "fn"), (2, "name"), (3, "payload"), (4, "codec")):
        if not isinstance(r[index], str):
            raise TypeError(f"{what} is {type(r[index]).__name__}, not text")
    timeout = r[7]
    if timeout is not None and not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout is {timeout!r:.40}, not a number")
    return Claimed(
        id=r[0],
        fn=r[1],
        name=r[2],
        payload=base64.b64decode(r[3], validate=True),
        codec=r[4],
        attempt=r[5],
        max_attempts=r[6],
        timeout=timeout,
        backoff=_decode_backoff(r[8]),
        retry_on=tuple(json.loads(r[9])) if r[9] else (),
        created=r[10],
    )


def _record(row: Sequence[Any]) -> TaskRecord:
    return TaskRecord(
        id=row[0],
        fn=row[1],
        name=row[2],
        state=row[3],
        attempt=row[4],
        max_attempts=row[5],
        key=row[6],
        codec=row[7],
        created=row[8],
        eta=row[9],
        started=row[10],
        finished=row[11],
        owner=row[12],
        lease_until=row[13],
        cancel_requested=bool(row[14]),
        result=row[15],
        error_type=row[16],
        error=row[17],
    )


def open_sqlite(url: str, *, durability: str) -> SqliteStore:
    """`sqlite:///relative/path.db`, `sqlite:////absolute/path.db` (as SQLAlchemy spells
    them), or `memory://`."""
    if url == "memory://":
        return SqliteStore(url, ":memory:", durability=durability)
    path = url[len("sqlite:///") :]
    if not path or path == ":memory:":
        raise ValueError(f"store {url!r} names no file; use sqlite:///path/to/offload.db")
    return SqliteStore(url, path, durability=durability)


def new_owner() -> str:
    """A worker's identity in the store: unique per process start."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
