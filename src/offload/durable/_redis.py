"""The shared durable store: Redis (7.0 or newer), for workers on many machines.
`store="redis://host:6379/0"` (or `rediss://`, `unix://`); `?prefix=myapp` names the
queue (default "offload"), so that several apps share one Redis. A URL naming a node of
a Redis Cluster gets redis-py's cluster client: every key of a queue shares the hash tag
of its prefix, so each function call goes to the one shard holding the queue.

Owns the client side of the `Store` interface on Redis: the connection (redis-py with
the hiredis parser), loading the server-side functions (`_redis.lua`, which holds the
key layout and every write), the checks made at open (Redis version, eviction
policy, persistence), the clock offset to the server, and the mapping of Redis's
errors to `StoreError`/`StoreBusy`/`StoreFull`.

Each write is one server-side function call, atomic on the server; a group's calls
(`batch()`) are not one transaction, as they are on SQLite, so every function can be
run twice without harm: a call whose reply was lost (a dropped connection, a Redis
restart) is retried by the store thread with the same arguments. Producers' batches
go out as one pipelined round trip of function calls of at most `CHUNK` tasks, so one
call never holds Redis for long.

Times: the store thread passes its own wall clock; this store shifts it by the
offset to the server's clock (measured at open and again every minute), so the
delays, leases and expiries of every worker are counted on one clock, Redis's.

Only the store thread calls in (see `_store.py`); the reader (`open_reader`) has its
own connection.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

from ._store import (
    Claimed,
    Depths,
    NewTask,
    Outcome,
    StoreBusy,
    StoreError,
    StoreFull,
    TaskRecord,
    display_url,
    encode_row,
    no_batch,
)

logger = logging.getLogger("offload")

#: The server-side library's name (bumped with an incompatible change of its keys).
LIBRARY = "offload_1"
#: The oldest Redis the functions run on (Redis Functions, sharded pub/sub).
MIN_REDIS = (7, 0)
#: Tasks (or outcomes) per function call: one call holds Redis a few milliseconds.
CHUNK = 500
#: After a connection failure, calls fail at once (StoreBusy) for this long, doubling
#: up to BACKOFF_MAX while Redis stays unreachable.
BACKOFF_MIN, BACKOFF_MAX = 0.05, 2.0
#: How often the offset to the server's clock is measured again.
CLOCK_EVERY = 60.0
#: How long the watch thread waits for a message before it looks at whether to stop.
WATCH_TIMEOUT = 0.1
#: Expired results deleted per call (see purge_expired).
PURGE_CHUNK = 5000
SOCKET_TIMEOUT = 10.0
CONNECT_TIMEOUT = 2.0
_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

_row_decoder = msgspec.json.Decoder()


def _lua_source() -> str:
    return resources.files(__package__).joinpath("_redis.lua").read_text(encoding="utf-8")


def split_url(url: str) -> tuple[str, str]:
    """The connection URL without offload's own `prefix` parameter, and the prefix.
    ValueError, naming the URL, for what redis-py would refuse only when it connects
    (a port or a database number that is not a number, an unknown option's bad value)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (parsed here: a bad port raises ValueError)
    except ValueError as exc:
        raise ValueError(f"store {url!r}: {exc}") from None
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefixes = [v for k, v in query if k == "prefix"]
    rest = [(k, v) for k, v in query if k != "prefix"]
    prefix = prefixes[-1] if prefixes else "offload"
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(
            f"store {url!r}: prefix {prefix!r} must be 1 to 64 letters, digits, or _ . : -"
        )
    db = parts.path.strip("/")
    if parts.scheme != "unix" and db and not db.isdigit():
        raise ValueError(f"store {url!r}: the database {db!r} must be a number (redis://host/0)")
    connect_url = urlunsplit(parts._replace(query=urlencode(rest)))
    try:
        from redis.connection import parse_url
    except ImportError:  # (opening says to install it)
        return connect_url, prefix
    try:
        parse_url(connect_url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise ValueError(f"store {url!r}: {exc}") from None
    return connect_url, prefix


def _fmt(t: float) -> str:
    return f"{t:.6f}"


def _num(value: Any) -> float | None:
    return None if value is None or value == b"" else float(value)


def _text(value: Any) -> str | None:
    return None if value is None or value == b"" else bytes(value).decode()


class RedisStore:
    """A `Store` on Redis. See the module docstring."""

    #: A group is several atomic calls, not one transaction (see the module docstring).
    atomic_batches = False

    def __init__(self, url: str, *, durability: str = "normal", reader: bool = False) -> None:
        try:
            import redis
        except ImportError:
            raise StoreError(
                f"the durable store {url!r} needs redis-py: pip install 'offload[redis]'"
            ) from None
        self._redis_module = redis
        self._url = url  # (with its password: to open the reader)
        self.url = display_url(url)  # (in every message)
        self._durability = durability
        connect_url, prefix = split_url(url)
        self.prefix = "{" + prefix + "}"  # a Cluster hash tag: one queue, one slot
        self._stream = self.prefix + ":q"
        self._down_until = 0.0
        self._backoff = BACKOFF_MIN
        self._version_seen: bytes | None = None
        #: A connection was lost since the last enqueue: the next one is told to check
        #: for ids already in (its tasks may be a lost call's, sent again).
        self._unsure = False
        self._offset = 0.0
        self._clock_at = 0.0
        self._connect_url = connect_url
        self._watcher: threading.Thread | None = None
        self._watching = threading.Event()  # set while watch()'s thread should run
        self._pubsub: Any = None
        client_name = f"offload-{'reader' if reader else 'store'}"
        self.cluster = False
        try:
            # (Any: redis-py types each call as sync-or-async; this client is sync)
            self._r: Any = redis.Redis.from_url(
                connect_url,
                socket_timeout=SOCKET_TIMEOUT,
                socket_connect_timeout=CONNECT_TIMEOUT,
                retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),
                retry_on_timeout=False,
                client_name=client_name,
            )
        except ValueError as exc:
            raise ValueError(f"store {url!r}: {exc}") from None
        try:
            self.cluster = self._cluster_enabled()
            if self.cluster:  # the same URL names a node; the client finds the others
                self._r.close()
                self._r = redis.cluster.RedisCluster.from_url(
                    connect_url,
                    socket_timeout=SOCKET_TIMEOUT,
                    socket_connect_timeout=CONNECT_TIMEOUT,
                    client_name=client_name,
                )
            for node in self._nodes():
                self._check_server(node, reader)
            if not reader:
                self._load_functions()
                self._call("offload_setup")
            self._measure_clock()
        except StoreError:
            self.close()
            raise
        except redis.RedisError as exc:
            self.close()
            raise StoreError(f"cannot open the durable store {url!r}: {exc}") from None

    # -- opening -----------------------------------------------------------------
    def _cluster_enabled(self) -> bool:
        redis = self._redis_module
        try:
            info = self._r.info("cluster")
        except redis.RedisError as exc:
            raise StoreError(f"cannot reach the durable store {self.url!r}: {exc}") from None
        return bool(int(info.get("cluster_enabled", 0)))

    def _nodes(self) -> list[Any]:
        """A plain client per server to check: the one, or every Cluster primary."""
        if not self.cluster:
            return [self._r]
        return [node.redis_connection for node in self._r.get_primaries()]

    def _check_server(self, node: Any, reader: bool) -> None:
        info = node.info("server")
        version = tuple(int(x) for x in str(info.get("redis_version", "0.0")).split(".")[:2])
        if version < MIN_REDIS:
            raise StoreError(
                f"the durable store {self.url!r} needs Redis {'.'.join(map(str, MIN_REDIS))}"
                f" or newer (server functions); this server is {info.get('redis_version')}"
            )
        if reader:
            return
        policy = self._config(node, "maxmemory-policy", "memory", "maxmemory_policy")
        if policy not in (None, "noeviction"):
            raise StoreError(
                f"the durable store {self.url!r} has maxmemory-policy {policy}: Redis would"
                " evict accepted tasks when memory runs short; set `maxmemory-policy"
                " noeviction` (full memory then refuses new tasks, with an error)"
            )
        aof = bool(int(node.info("persistence").get("aof_enabled", 0)))
        save = self._config(node, "save", None, None)
        if not aof and not save:
            logger.warning(
                "offload: the durable store %s has persistence off (no AOF, no RDB"
                " snapshots): a Redis restart loses every task; enable `appendonly yes`",
                self.url,
            )
        if self._durability == "full":
            fsync = self._config(node, "appendfsync", None, None)
            if not aof or fsync != "always":
                raise StoreError(
                    f"durability='full' on {self.url!r} needs `appendonly yes` and"
                    f" `appendfsync always` (this server: appendonly"
                    f" {'yes' if aof else 'no'}, appendfsync {fsync})"
                )

    def _config(self, node: Any, name: str, section: str | None, field: str | None) -> str | None:
        """A config value, or None where CONFIG is refused (managed Redis): then the
        INFO field names it, if there is one."""
        redis = self._redis_module
        try:
            value = node.config_get(name).get(name)
            return None if value is None else str(value)
        except redis.ResponseError:
            if section is None or field is None:
                return None
            value = node.info(section).get(field)
            return None if value is None else str(value)

    def _load_functions(self) -> None:
        redis = self._redis_module
        try:
            self._r.function_load(_lua_source(), replace=True)
        except redis.ResponseError as exc:
            raise StoreError(f"cannot load offload's functions into {self.url!r}: {exc}") from None

    def _measure_clock(self) -> None:
        before = time.time()
        seconds, micros = self._r.time()
        after = time.time()
        self._offset = seconds + micros / 1e6 - (before + after) / 2
        self._clock_at = time.monotonic()

    # -- calls -------------------------------------------------------------------
    def _call(self, function: str, *args: Any, read_only: bool = False) -> Any:
        return self._run(lambda: self._fcall(self._r, function, args, read_only))

    def _fcall(self, client: Any, function: str, args: Sequence[Any], read_only: bool) -> Any:
        command = "FCALL_RO" if read_only else "FCALL"
        return client.execute_command(command, function, 1, self._stream, self.prefix, *args)

    def _run(self, call: Any) -> Any:
        """call(), with Redis's failures as StoreErrors: StoreBusy (try again) for a
        connection lost or a server loading or busy; functions missing after a
        restart that lost them are loaded again once."""
        redis = self._redis_module
        now = time.monotonic()
        if now < self._down_until:
            raise StoreBusy(f"the durable store {self.url!r} is unreachable; retrying")
        try:
            try:
                result = call()
            except redis.ResponseError as exc:
                if "function not found" not in str(exc).lower():
                    raise
                self._load_functions()
                self._r.execute_command("FCALL", "offload_setup", 1, self._stream, self.prefix)
                result = call()
        except (
            redis.ConnectionError,
            redis.TimeoutError,
            redis.BusyLoadingError,
            redis.exceptions.ClusterError,
        ) as exc:
            self._down_until = now + self._backoff
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)
            self._unsure = True  # a write may have been made, its reply lost
            raise StoreBusy(f"the durable store {self.url!r} is unreachable ({exc})") from None
        except redis.ResponseError as exc:
            text = str(exc)
            if isinstance(exc, redis.exceptions.OutOfMemoryError) or text.startswith("OOM"):
                raise StoreFull(f"the durable store {self.url!r} is full: {text}") from None
            if text.startswith("BUSY"):
                raise StoreBusy(f"the durable store {self.url!r} is busy: {text}") from None
            raise StoreError(f"durable store error on {self.url!r}: {text}") from None
        self._backoff = BACKOFF_MIN
        if now - self._clock_at > CLOCK_EVERY:
            self._measure_clock()
        return result

    def _pipelined(self, function: str, lead: Sequence[Any], chunks: list[list[Any]]) -> list[Any]:
        """One function call per chunk of arguments, all in one round trip."""
        if len(chunks) == 1:
            return [self._call(function, *lead, *chunks[0])]

        def send() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            for chunk in chunks:
                self._fcall(pipe, function, [*lead, *chunk], False)
            results: list[Any] = pipe.execute(raise_on_error=True)
            return results

        results: list[Any] = self._run(send)
        return results

    def _server(self, t: float) -> str:
        return _fmt(t + self._offset)

    def _local(self, value: Any) -> float | None:
        t = _num(value)
        return None if t is None else t - self._offset

    # -- the producer's side -----------------------------------------------------------
    def batch(self) -> Any:
        return no_batch()

    def _task_args(self, t: NewTask) -> list[Any]:
        return [
            t.id,
            self._server(t.eta),
            t.max_attempts,
            t.key or "",
            t.on_duplicate,
            t.row or encode_row(t),
            repr(t.created),
        ]

    def enqueue(self, tasks: Sequence[NewTask], now: float) -> None:
        if not tasks:
            return
        chunks = []
        for start in range(0, len(tasks), CHUNK):
            chunk: list[Any] = []
            for t in tasks[start : start + CHUNK]:
                chunk += self._task_args(t)
            chunks.append(chunk)
        check = "1" if self._unsure else "0"
        results = self._pipelined("offload_enqueue", [self._server(now), check], chunks)
        self._unsure = False
        holders = [h for result in results for h in result]
        for t, holder in zip(tasks, holders):
            t.duplicate_of = holder.decode() if holder else None

    def fire_slot(self, schedule: str, slot: float, task: NewTask, now: float) -> bool:
        fired = self._call(
            "offload_fire_slot", schedule, repr(slot), self._server(now), *self._task_args(task)
        )
        return bool(fired)

    # -- the worker's side -------------------------------------------------------------
    def claim(self, owner: str, n: int, now: float, lease: float) -> list[Claimed]:
        rows = self._call("offload_claim", owner, n, self._server(now), repr(lease))
        claimed = []
        for task_id, attempt, row in rows:
            try:
                claimed.append(_claimed(row, int(attempt)))
            except (ValueError, TypeError, msgspec.DecodeError) as exc:
                self._dead_letter_corrupt(owner, task_id.decode(), int(attempt), exc, now)
        return claimed

    def _dead_letter_corrupt(
        self, owner: str, task_id: str, attempt: int, exc: Exception, now: float
    ) -> None:
        error = f"the stored row cannot be read: {type(exc).__name__}: {exc}"
        logger.error(
            "offload: durable task %s has a corrupted record (%s) and went to the dead-letter set",
            task_id,
            error,
        )
        self.finish(owner, [Outcome(task_id, attempt, "dead", None, "CorruptRow", error)], now, 0)

    def renew(self, owner: str, ids: Sequence[str], now: float, lease: float) -> list[str]:
        if not ids:
            return []
        cancels = self._call(
            "offload_renew", owner, self._server(now), repr(lease), *dict.fromkeys(ids)
        )
        return [c.decode() for c in cancels]

    def finish(self, owner: str, outcomes: Sequence[Outcome], now: float, ttl: float) -> list[str]:
        if not outcomes:
            return []
        chunks = []
        for start in range(0, len(outcomes), CHUNK):
            chunk: list[Any] = []
            for o in outcomes[start : start + CHUNK]:
                chunk += (
                    o.id,
                    o.attempt,
                    o.kind,
                    o.result if o.result is not None else b"",
                    o.error_type or "",
                    o.error or "",
                    self._server(o.eta),
                )
            chunks.append(chunk)
        results = self._pipelined(
            "offload_finish", [owner, self._server(now), repr(float(ttl))], chunks
        )
        return [i.decode() for result in results for i in result]

    def release(self, owner: str, now: float) -> int:
        return int(self._call("offload_release", owner, self._server(now)))

    def reclaim(self, now: float) -> tuple[int, int]:
        requeued, dead = self._call("offload_reclaim", self._server(now))
        return int(requeued), int(dead)

    def next_eta(self, now: float) -> float | None:
        later = self._run(
            lambda: self._r.zrangebyscore(
                self.prefix + ":delayed", "(" + self._server(now), "+inf", 0, 1, withscores=True
            )
        )
        return self._local(later[0][1]) if later else None

    def changed(self) -> bool:
        version = self._run(lambda: self._r.get(self.prefix + ":v"))
        if version == self._version_seen:
            return False
        self._version_seen = version
        return True

    # -- lookups and operators ----------------------------------------------------------
    def get(self, task_id: str) -> TaskRecord | None:
        fields = self._run(lambda: self._r.hgetall(f"{self.prefix}:t:{task_id}"))
        return self._record(task_id, fields) if fields else None

    def tasks(self, state: str | None, limit: int) -> list[TaskRecord]:
        ids = [i.decode() for i in self._call("offload_list", state or "", limit, read_only=True)]

        def read() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            for task_id in ids:
                pipe.hgetall(f"{self.prefix}:t:{task_id}")
            found: list[Any] = pipe.execute()
            return found

        records = [
            self._record(task_id, fields)
            for task_id, fields in zip(ids, self._run(read) if ids else [])
            if fields
        ]
        if state is None:
            records.sort(key=lambda r: r.created, reverse=True)
        return records[:limit]

    def cancel(self, task_id: str, now: float) -> str:
        return bytes(self._call("offload_cancel", task_id, self._server(now))).decode()

    def retry_dead(self, task_ids: Sequence[str] | None, now: float) -> int:
        everything = "1" if task_ids is None else "0"
        return int(
            self._call("offload_retry_dead", self._server(now), everything, *(task_ids or ()))
        )

    def purge(self, state: str, task_ids: Sequence[str] | None) -> int:
        everything = "1" if task_ids is None else "0"
        return int(self._call("offload_purge", state, everything, *(task_ids or ())))

    def purge_expired(self, now: float) -> int:
        """In calls of a few thousand (each holds Redis a few milliseconds), until
        none is left: a queue finishing 20,000 tasks a second has a million a minute."""
        total = 0
        for _ in range(10_000):
            deleted, more = self._call("offload_purge_expired", self._server(now), PURGE_CHUNK)
            total += int(deleted)
            if not int(more):
                break
        return total

    def depths(self, now: float) -> Depths:
        ready, scheduled, running, expired, succeeded, cancelled, dead, oldest = self._call(
            "offload_depths", self._server(now), read_only=True
        )
        oldest_eta = self._local(oldest)
        return Depths(
            by_state={
                "queued": int(ready) + int(scheduled),
                "running": int(running),
                "succeeded": int(succeeded),
                "dead": int(dead),
                "cancelled": int(cancelled),
            },
            ready=int(ready),
            scheduled=int(scheduled),
            leases=int(running) - int(expired),
            expired_leases=int(expired),
            oldest_ready_age=None if oldest_eta is None else max(0.0, now - oldest_eta),
        )

    def open_reader(self) -> RedisStore:
        return RedisStore(self._url, durability=self._durability, reader=True)

    def check(self) -> None:
        """Nothing to check: a Redis that went away is a StoreBusy on the next call."""

    def watch(self, wake: Callable[[], None]) -> None:
        """Call `wake()` from a thread of its own (`offload-redis-watch`) whenever tasks
        become ready in this queue (the functions publish on `{prefix}:ready`): a
        waiting worker claims at once instead of at its next poll of `changed()`,
        which stays the fallback (a lost message, a reconnection)."""
        self._watching.set()
        self._watcher = threading.Thread(
            target=self._watch, args=(wake,), name="offload-redis-watch", daemon=True
        )
        self._watcher.start()

    def _watch(self, wake: Callable[[], None]) -> None:
        redis = self._redis_module
        channel = self.prefix + ":ready"
        pause = BACKOFF_MIN
        while self._watching.is_set():
            try:
                pubsub = self._pubsub = self._r.pubsub()
                pubsub.ssubscribe(channel)
                pause = BACKOFF_MIN
                wake()  # (anything published while we were away)
                while self._watching.is_set():
                    if pubsub.get_sharded_message(
                        ignore_subscribe_messages=True, timeout=WATCH_TIMEOUT
                    ):
                        wake()
            except (redis.RedisError, OSError, ValueError, AttributeError):
                if not self._watching.is_set():
                    break
                time.sleep(pause)  # unreachable: the polls go on meanwhile
                pause = min(pause * 2, BACKOFF_MAX)
            finally:
                self._close_pubsub()

    def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):  # (closing what may be broken already)
                pubsub.close()

    def close(self) -> None:
        if self._watcher is not None:
            self._watching.clear()
            self._watcher.join(WATCH_TIMEOUT + 5)
            self._watcher = None
        if self.cluster:  # (RedisCluster.close() leaves its nodes' sockets open)
            for node in self._r.get_nodes():
                if node.redis_connection is not None:
                    node.redis_connection.connection_pool.disconnect()
        self._r.close()

    def _record(self, task_id: str, f: dict[bytes, bytes]) -> TaskRecord:
        row = _row_decoder.decode(f[b"r"])
        return TaskRecord(
            id=task_id,
            fn=row[1],
            name=row[2],
            state=f[b"s"].decode(),
            attempt=int(f.get(b"a", 0)),
            max_attempts=int(f[b"m"]),
            key=_text(f.get(b"k")),
            codec=row[4],
            created=float(row[11]),
            eta=self._local(f.get(b"t")) or 0.0,
            started=self._local(f.get(b"st")),
            finished=self._local(f.get(b"f")),
            owner=_text(f.get(b"o")),
            lease_until=self._local(f.get(b"l")),
            cancel_requested=f.get(b"c") == b"1",
            result=f.get(b"res") or None,
            error_type=_text(f.get(b"et")),
            error=_text(f.get(b"er")),
        )


def _claimed(row: bytes, attempt: int) -> Claimed:
    r = _row_decoder.decode(row)
    for index, what in ((0, "id"), (1, "fn"), (2, "name"), (3, "payload"), (4, "codec")):
        if not isinstance(r[index], str):
            raise TypeError(f"{what} is {type(r[index]).__name__}, not text")
    timeout, backoff = r[8], r[9]
    if timeout is not None and not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout is {timeout!r:.40}, not a number")
    return Claimed(
        id=r[0],
        fn=r[1],
        name=r[2],
        payload=base64.b64decode(r[3], validate=True),
        codec=r[4],
        attempt=attempt,
        max_attempts=int(r[7]),
        timeout=timeout,
        backoff=None
        if backoff is None
        else (float(backoff[0]), float(backoff[1]), float(backoff[2]), bool(backoff[3])),
        retry_on=tuple(r[10] or ()),
        created=float(r[11]),
    )


def open_redis(url: str, *, durability: str) -> RedisStore:
    """`redis://[user:password@]host:port/db`, `rediss://...` (TLS) or
    `unix:///path/redis.sock`, each with an optional `?prefix=name`."""
    return RedisStore(url, durability=durability)
