"""What the Redis store adds to the store contract (test_store.py runs that on Redis
too): the checks made at open, calls that are safe to repeat (a reply lost with the
connection), a group that is not one transaction, a Redis that goes away and comes
back, a full Redis, a skewed client clock, the functions lost by a restart, queues
kept apart by their prefix, and every key of a queue in one Cluster slot.

Tests that change a server's configuration or kill it start a private one."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot
from redis_server import RedisServer
from waiting import wait_until

import offload
from offload.durable._redis import RedisStore, open_redis, split_url
from offload.durable._store import NewTask, Outcome, StoreBusy, StoreError, StoreFull

from . import tasks
from .conftest import MakeRuntime, redis_url_for


def state_of(rt: offload.Runtime, task_id: str) -> str | None:
    info = rt.durable.get(task_id)
    return None if info is None else info.state


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server, stopped at the end of the test."""
    s = RedisServer(tmp_path / "redis")
    yield s
    s.stop()


_clients: list[Any] = []


def client(url: str) -> Any:
    """A plain redis-py client (closed at the end of the test, see below)."""
    c = redis.Redis.from_url(split_url(url)[0])
    _clients.append(c)
    return c


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


def new(task_id: str, *, eta: float | None = None, key: str | None = None) -> NewTask:
    now = time.time()
    return NewTask(
        id=task_id,
        fn="tests.durable.tasks:add",
        name="add",
        payload=b"\x92\x92\x01\x02\x80",
        codec="msgpack",
        eta=now if eta is None else eta,
        max_attempts=3,
        timeout=None,
        backoff=None,
        retry_on=(),
        created=now,
        key=key,
    )


# -- opening -------------------------------------------------------------------------------


def test_an_evicting_redis_is_refused_with_the_reason(server: RedisServer) -> None:
    client(server.url).config_set("maxmemory-policy", "allkeys-lru")
    with pytest.raises(StoreError, match=r"maxmemory-policy allkeys-lru.*noeviction"):
        open_redis(server.url, durability="normal")


def test_a_redis_without_persistence_is_opened_with_a_warning(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    client(server.url).config_set("appendonly", "no")
    with caplog.at_level(logging.WARNING, logger="offload"):
        open_redis(server.url, durability="normal").close()
    assert any("persistence off" in r.getMessage() for r in caplog.records)


def test_durability_full_needs_an_fsync_per_write(server: RedisServer) -> None:
    with pytest.raises(StoreError, match=r"appendfsync always.*appendfsync everysec"):
        open_redis(server.url, durability="full")
    client(server.url).config_set("appendfsync", "always")
    open_redis(server.url, durability="full").close()


def test_an_unreachable_redis_is_refused_at_open() -> None:
    with pytest.raises(StoreError, match=r"cannot reach the durable store"):
        open_redis("redis://127.0.0.1:1/0", durability="normal")


# -- calls safe to repeat ----------------------------------------------------------------------


def test_an_enqueue_whose_reply_was_lost_is_sent_again_without_a_duplicate(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server ran the call, the connection dropped before its reply: the store
    thread sends the same tasks again, and none is inserted twice."""
    store = open_redis(redis_url, durability="normal")
    try:
        real_read = redis.connection.Connection.read_response
        lost: list[int] = []

        def read_response(self: Any, *args: Any, **kwargs: Any) -> Any:
            reply = real_read(self, *args, **kwargs)
            if not lost:
                lost.append(1)
                self.disconnect()
                raise redis.ConnectionError("connection lost before the reply")
            return reply

        batch = [new("a"), new("b", key="k")]
        monkeypatch.setattr(redis.connection.Connection, "read_response", read_response)
        with pytest.raises(StoreBusy):
            store.enqueue(batch, time.time())
        monkeypatch.undo()
        assert lost == [1]
        store._down_until = 0.0  # (skip the backoff: retry at once)
        again = [new("a"), new("b", key="k")]
        store.enqueue(again, time.time())  # what the store thread does with held tasks
        assert [t.duplicate_of for t in again] == [None, None]
        assert store.depths(time.time()).ready == 2
        claimed = store.claim("w", 10, time.time(), 30.0)
        assert sorted(c.id for c in claimed) == ["a", "b"]
    finally:
        store.close()


def test_a_repeated_ack_changes_nothing(redis_url: str) -> None:
    store = open_redis(redis_url, durability="normal")
    try:
        store.enqueue([new("a")], time.time())
        store.claim("w", 1, time.time(), 30.0)
        done = [Outcome("a", 1, "succeeded", b"\x01")]
        assert store.finish("w", done, time.time(), 60) == []
        assert store.finish("w", done, time.time(), 60) == ["a"]  # not written again
        record = store.get("a")
        assert record is not None and (record.state, record.result) == ("succeeded", b"\x01")
        assert store.depths(time.time()).by_state["succeeded"] == 1
    finally:
        store.close()


def test_a_group_failing_after_its_enqueue_still_reports_the_tasks_persisted(
    make_runtime: MakeRuntime, redis_url: str, arun: Any
) -> None:
    """On Redis a group is several calls: tasks an enqueue wrote are persisted even
    when a later call of the same group (here the claim) fails."""
    rt = make_runtime(store=redis_url, durable_concurrency=4)
    store_thread: Any = None

    async def main() -> None:
        nonlocal store_thread
        h0 = rt.durable.spawn(tasks.add, 0, 0)
        await h0.result(10)
        store_thread = rt.durable._thread
        store = store_thread.store
        real_claim, real_enqueue = store.claim, store.enqueue
        enqueued: list[int] = []
        failures: list[int] = []

        def enqueue(*args: Any) -> Any:
            enqueued.append(1)
            return real_enqueue(*args)

        def failing_claim(*args: Any) -> Any:
            if enqueued and not failures:  # the claim of the group that enqueued
                failures.append(1)
                raise StoreError("the claim failed once")
            return real_claim(*args)

        store.enqueue, store.claim = enqueue, failing_claim
        h = rt.durable.spawn(tasks.add, 2, 3)
        await h.persisted()
        assert await h.result(10) == 5
        assert failures == [1]

    arun(main())


# -- Redis going away --------------------------------------------------------------------------


def test_spawns_while_redis_is_down_are_kept_and_written_when_it_is_back(
    make_runtime: MakeRuntime, server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = redis_url_for(server)
    rt = make_runtime(store=url, durable_concurrency=4)
    assert rt.durable.spawn(tasks.add, 1, 1).result_sync(10) == 2
    server.kill()  # SIGKILL: the AOF (fsync every second) keeps what was written before
    with caplog.at_level(logging.INFO, logger="offload"):
        handles = [rt.durable.spawn(tasks.add, i, i) for i in range(20)]
        with pytest.raises(TimeoutError):
            handles[-1].wait_persisted(0.5)
        server.start()
        assert [h.result_sync(30) for h in handles] == [2 * i for i in range(20)]
    assert any("unreachable" in r.getMessage() for r in caplog.records)
    assert any("writable again" in r.getMessage() for r in caplog.records)


def test_functions_lost_by_a_restart_are_loaded_again(redis_url: str) -> None:
    store = open_redis(redis_url, durability="normal")
    try:
        client(redis_url).function_flush()
        store.enqueue([new("a")], time.time())
        assert [c.id for c in store.claim("w", 1, time.time(), 30.0)] == ["a"]
    finally:
        store.close()


def test_a_full_redis_refuses_new_tasks_with_store_full(
    make_runtime: MakeRuntime, server: RedisServer
) -> None:
    url = redis_url_for(server)
    rt = make_runtime(store=url, durable_concurrency=0)
    rt.durable.spawn(tasks.add, 0, 0).wait_persisted(10)
    r = client(url)
    used = int(r.info("memory")["used_memory"])
    r.config_set("maxmemory", str(used + 64 * 1024))
    handle = rt.durable.spawn(tasks.note, "big", b"x" * 200_000)
    with pytest.raises(StoreFull, match="full"):
        handle.wait_persisted(10)


# -- one clock, the server's ---------------------------------------------------------------------


def test_a_worker_whose_clock_is_behind_keeps_its_lease(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Leases are counted on Redis's clock: a worker 30 s behind claims with a 10 s
    lease, and a worker with the right time does not take the task over."""
    real = time.time
    monkeypatch.setattr("offload.durable._redis.time.time", lambda: real() - 30)
    behind = open_redis(redis_url, durability="normal")
    monkeypatch.setattr("offload.durable._redis.time.time", real)
    right = open_redis(redis_url, durability="normal")
    try:
        right.enqueue([new("t")], real())
        [c] = behind.claim("behind", 1, real() - 30, 10.0)
        assert right.reclaim(real()) == (0, 0)
        record = right.get("t")
        assert record is not None and record.owner == "behind"
        assert record.lease_until == pytest.approx(real() + 10, abs=2)
        assert (
            behind.finish("behind", [Outcome("t", c.attempt, "succeeded")], real() - 30, 60) == []
        )
    finally:
        behind.close()
        right.close()


# -- queues and keys -----------------------------------------------------------------------------


def test_queues_with_other_prefixes_are_apart(redis_server: RedisServer) -> None:
    one = open_redis(redis_url_for(redis_server), durability="normal")
    two = open_redis(redis_url_for(redis_server), durability="normal")
    try:
        one.enqueue([new("a")], time.time())
        assert two.claim("w", 10, time.time(), 30.0) == []
        assert two.get("a") is None and two.depths(time.time()).ready == 0
        assert [c.id for c in one.claim("w", 10, time.time(), 30.0)] == ["a"]
    finally:
        one.close()
        two.close()


def test_every_key_of_a_queue_is_in_one_cluster_slot(redis_url: str) -> None:
    """The hash tag of the prefix: a queue's functions never cross slots on a Cluster."""
    store = open_redis(redis_url, durability="normal")
    try:
        now = time.time()
        store.enqueue([new("a", key="k"), new("b", eta=now + 60), new("c"), new("d")], now)
        store.claim("w", 2, now, 30.0)
        store.finish(
            "w", [Outcome("a", 1, "succeeded"), Outcome("c", 1, "dead", error="x")], now, 60
        )
        store.fire_slot("nightly", now, new("n"), now)
        r = client(redis_url)
        prefix = store.prefix
        keys = [k.decode() for k in r.scan_iter(match=prefix + "*")]
        assert len(keys) >= 9, keys
        slots = {key_slot(k.encode()) for k in keys}
        assert len(slots) == 1, keys
    finally:
        store.close()


def test_dead_consumers_with_nothing_pending_leave_the_group_after_an_hour(
    redis_url: str,
) -> None:
    store = open_redis(redis_url, durability="normal")
    try:
        store.enqueue([new("a")], time.time())
        store.claim("gone", 1, time.time(), 0.1)  # a worker killed: its lease runs out
        time.sleep(0.2)
        assert store.reclaim(time.time()) == (1, 0)
        store.claim("alive", 1, time.time(), 30.0)
        r = client(redis_url)
        names = {c["name"] for c in r.xinfo_consumers(store.prefix + ":q", "workers")}
        assert names == {b"gone", b"alive"}
        store.purge_expired(time.time())  # not idle for an hour yet: kept
        assert len(r.xinfo_consumers(store.prefix + ":q", "workers")) == 2
    finally:
        store.close()


def test_a_redis_store_is_configured_by_url_only(
    make_runtime: MakeRuntime, redis_url: str, arun: Any
) -> None:
    rt = make_runtime(store=redis_url)

    async def main() -> int:
        h = rt.durable.options(delay=0.2, key="once").spawn(tasks.add, 20, 22)
        again = rt.durable.options(key="once").spawn(tasks.add, 1, 1)
        await again.persisted()
        assert again.joined and again.id == h.id
        info = rt.durable.get(h.id)
        assert info is not None and info.state == "scheduled"
        return int(await h.result(10))

    assert arun(main()) == 42
    assert isinstance(rt.durable._thread.store, RedisStore)
    asyncio.get_event_loop_policy()


def test_queues_on_every_shard_of_a_cluster_run_and_reclaim(
    make_runtime: MakeRuntime, redis_cluster: Any
) -> None:
    """One queue per prefix, one slot per queue: queues spread over the three primaries
    each run their tasks, and each one's expired leases are reclaimed on its shard."""
    r = redis.cluster.RedisCluster.from_url(redis_cluster.url)
    _clients.append(r)
    by_node: dict[str, str] = {}
    for n in range(200):
        prefix = f"shard{n}-{time.monotonic_ns()}"
        node = r.get_node_from_key("{" + prefix + "}:q").name
        by_node.setdefault(node, prefix)
    assert len(by_node) == 3, by_node
    for prefix in by_node.values():
        url = f"{redis_cluster.url}?prefix={prefix}"
        store = open_redis(url, durability="normal")
        try:
            store.enqueue([new("lost")], time.time())
            store.claim("killed-worker", 1, time.time(), 0.2)
        finally:
            store.close()
        time.sleep(0.3)
        rt = make_runtime(store=url, durable_concurrency=4, lease=5)
        handle = rt.durable.spawn(tasks.add, 1, 2)
        assert handle.result_sync(20) == 3
        # the lease the "killed" worker took ran out: reclaimed on this shard, run again
        assert wait_until(lambda rt=rt: state_of(rt, "lost") == "succeeded", 20)
        record = rt.durable.get("lost")
        assert record is not None and record.attempt == 2
        rt.close(5)


def test_a_password_in_the_url_is_never_shown(
    server: RedisServer,
    make_runtime: MakeRuntime,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client(server.url).config_set("requirepass", "s3cret-pass")
    url = f"redis://default:s3cret-pass@127.0.0.1:{server.port}/0?prefix=pw"
    with pytest.raises(StoreError) as refused:
        open_redis(url.replace(str(server.port), "1"), durability="normal")
    assert "s3cret" not in str(refused.value) and ":***@" in str(refused.value)
    rt = make_runtime(store=url, durable_concurrency=2)
    assert rt.durable.spawn(tasks.add, 1, 2).result_sync(10) == 3
    assert rt.durable.stats()["store"] == f"redis://default:***@127.0.0.1:{server.port}/0?prefix=pw"
    from offload.durable._cli import main

    with caplog.at_level(logging.INFO, logger="offload"):
        assert main(["status", "--store", url]) == 0
    shown = capsys.readouterr().out
    assert "store: redis://default:***@" in shown and "s3cret" not in shown
    assert all("s3cret" not in r.getMessage() for r in caplog.records)


def test_expired_results_are_purged_however_many(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More than one purge call's worth: all go, and their index with them."""
    monkeypatch.setattr("offload.durable._redis.PURGE_CHUNK", 500)
    store = open_redis(redis_url, durability="normal")
    try:
        now = time.time()
        n = 1_200
        store.enqueue([new(f"t{i}", eta=now) for i in range(n)], now)
        done = []
        while len(done) < n:
            done += store.claim("w", 1000, now, 60.0)
        store.finish("w", [Outcome(c.id, 1, "succeeded") for c in done], now, 10.0)
        assert store.depths(now).by_state["succeeded"] == n
        assert store.purge_expired(now + 5) == 0
        assert store.purge_expired(now + 11) == n
        assert store.depths(now + 11).by_state["succeeded"] == 0
        assert client(redis_url).zcard(store.prefix + ":done:succeeded") == 0
    finally:
        store.close()


def test_an_idle_worker_is_woken_by_the_queue_not_by_its_next_poll(
    make_runtime: MakeRuntime, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers wait on the queue's channel: a task spawned in another process after a
    long idle starts at once, though the worker's poll of `changed()` (made 60 s at
    most here) would come only seconds later."""
    monkeypatch.setattr("offload.durable._thread.POLL_MAX", 60.0)
    worker = make_runtime(store=redis_url, durable_concurrency=2)
    worker.durable.start()
    time.sleep(5.0)  # idle: its polls back off to seconds apart (the next at ~8.2 s)
    producer = make_runtime(store=redis_url, durable_concurrency=0)
    started = time.monotonic()
    handle = producer.durable.spawn(tasks.add, 2, 2)
    assert handle.result_sync(30) == 4
    assert time.monotonic() - started < 2.5  # (its next poll: ~3 s away)
    assert any(t.name == "offload-redis-watch" for t in threading.enumerate())


def test_a_worker_does_not_spin_while_redis_is_down(
    make_runtime: MakeRuntime, server: RedisServer
) -> None:
    """Its renewal and reclaim stay due while Redis is unreachable: the store thread
    tries again every RETRY_AFTER (50 ms), not in a busy loop."""
    rt = make_runtime(store=redis_url_for(server), durable_concurrency=2, lease=3)
    assert rt.durable.spawn(tasks.add, 1, 1).result_sync(10) == 2
    store = rt.durable._thread.store
    calls: list[str] = []
    for name in ("claim", "reclaim", "renew", "changed", "next_eta"):
        real = getattr(store, name)

        def counted(*args: Any, _real: Any = real, _name: str = name) -> Any:
            calls.append(_name)
            return _real(*args)

        setattr(store, name, counted)
    server.kill()
    time.sleep(0.5)  # (the first failures)
    del calls[:]
    time.sleep(1.0)
    assert 0 < len(calls) < 100, len(calls)
    server.start()
    assert rt.durable.spawn(tasks.add, 2, 2).result_sync(30) == 4
