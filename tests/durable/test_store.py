"""The store contract: what every durable store (`offload.durable._store.Store`)
guarantees, checked on each of them through the interface alone: SQLite on disk and
in memory, and Redis (one server, and a Cluster of three primaries).

Claims take due tasks oldest first and count the attempt; a lease is renewed by its
owner only; an outcome is written only by the owner of the attempt (the fenced ack);
expired leases are reclaimed, to the dead-letter set after the last attempt; keys
dedup while queued or running; a periodic slot fires once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from offload.durable._redis import open_redis
from offload.durable._sqlite import open_sqlite
from offload.durable._store import NewTask, Outcome, Store

from .conftest import redis_url_for

T0 = 1_800_000_000.0  # a wall-clock time; the store never reads the clock itself


def new(
    task_id: str,
    *,
    eta: float = T0,
    key: str | None = None,
    attempts: int = 3,
    on_duplicate: str = "join",
) -> NewTask:
    return NewTask(
        id=task_id,
        fn="tests.durable.tasks:add",
        name="add",
        payload=b"\x92\x92\x01\x02\x80",
        codec="msgpack",
        eta=eta,
        max_attempts=attempts,
        timeout=None,
        backoff=None,
        retry_on=(),
        created=T0,
        key=key,
        on_duplicate=on_duplicate,
    )


@pytest.fixture(params=["sqlite", "memory", "redis", "redis-cluster"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param.startswith("redis"):
        server = "redis_cluster" if request.param == "redis-cluster" else "redis_server"
        s: Store = open_redis(redis_url_for(request.getfixturevalue(server)), durability="normal")
    else:
        url = "memory://" if request.param == "memory" else "sqlite:///" + str(tmp_path / "s.db")
        s = open_sqlite(url, durability="normal")
    try:
        yield s
    finally:
        s.close()


def write(store: Store, fn: Callable[[], object]) -> object:
    with store.batch():
        return fn()


def test_claims_take_due_tasks_oldest_first_and_count_the_attempt(store: Store) -> None:
    write(
        store,
        lambda: store.enqueue([new("b", eta=T0 + 1), new("a"), new("later", eta=T0 + 60)], T0),
    )
    claimed = write(store, lambda: store.claim("w1", 10, T0 + 2, 30.0))
    assert [c.id for c in claimed] == ["a", "b"]  # type: ignore[union-attr]
    assert [c.attempt for c in claimed] == [1, 1]  # type: ignore[union-attr]
    record = store.get("a")
    assert record is not None and record.state == "running" and record.owner == "w1"
    assert record.lease_until == pytest.approx(T0 + 32)
    assert store.next_eta(T0 + 2) == pytest.approx(T0 + 60)
    assert write(store, lambda: store.claim("w2", 10, T0 + 2, 30.0)) == []


def test_a_claim_returns_the_payload_and_controls_intact(store: Store) -> None:
    task = new("x")
    task.timeout, task.backoff, task.retry_on = 2.5, (0.1, 2.0, 9.0, True), ("builtins.OSError",)
    write(store, lambda: store.enqueue([task], T0))
    [c] = write(store, lambda: store.claim("w", 1, T0, 30.0))  # type: ignore[misc]
    assert (c.payload, c.timeout, c.backoff, c.retry_on) == (
        task.payload,
        2.5,
        (0.1, 2.0, 9.0, True),
        ("builtins.OSError",),
    )
    assert (c.fn, c.name, c.codec, c.max_attempts) == (task.fn, "add", "msgpack", 3)


def test_the_fenced_ack_refuses_an_owner_whose_lease_was_reclaimed(store: Store) -> None:
    write(store, lambda: store.enqueue([new("t")], T0))
    write(store, lambda: store.claim("old", 1, T0, 1.0))
    assert write(store, lambda: store.reclaim(T0 + 5)) == (1, 0)
    [c] = write(store, lambda: store.claim("new", 1, T0 + 5, 30.0))  # type: ignore[misc]
    assert c.attempt == 2
    # the paused worker wakes up and acks its attempt 1: refused, nothing written
    refused = write(
        store, lambda: store.finish("old", [Outcome("t", 1, "succeeded", b"\xc0")], T0 + 6, 60)
    )
    assert refused == ["t"]
    record = store.get("t")
    assert record is not None and record.state == "running" and record.owner == "new"
    # the new owner's ack goes through
    assert (
        write(
            store, lambda: store.finish("new", [Outcome("t", 2, "succeeded", b"\x01")], T0 + 7, 60)
        )
        == []
    )
    record = store.get("t")
    assert record is not None and (record.state, record.result) == ("succeeded", b"\x01")


def test_even_the_same_owner_cannot_ack_an_older_attempt(store: Store) -> None:
    write(store, lambda: store.enqueue([new("t")], T0))
    write(store, lambda: store.claim("w", 1, T0, 1.0))
    write(store, lambda: store.reclaim(T0 + 5))
    write(store, lambda: store.claim("w", 1, T0 + 5, 30.0))
    assert write(
        store, lambda: store.finish("w", [Outcome("t", 1, "dead", error="x")], T0 + 6, 60)
    ) == ["t"]


def test_renewal_extends_only_the_owners_leases_and_reports_cancel_requests(store: Store) -> None:
    write(store, lambda: store.enqueue([new("a"), new("b")], T0))
    write(store, lambda: store.claim("w1", 1, T0, 10.0))
    write(store, lambda: store.claim("w2", 1, T0, 10.0))
    assert write(store, lambda: store.cancel("a", T0)) == "requested"
    assert write(store, lambda: store.renew("w1", ["a"], T0 + 8, 10.0)) == ["a"]
    a, b = store.get("a"), store.get("b")
    assert a is not None and b is not None
    assert a.lease_until == pytest.approx(T0 + 18) and b.lease_until == pytest.approx(T0 + 10)
    assert write(store, lambda: store.reclaim(T0 + 11)) == (1, 0)  # only b's lease ran out


def test_the_last_attempt_lost_goes_to_the_dead_letter_set(store: Store) -> None:
    write(store, lambda: store.enqueue([new("p", attempts=2)], T0))
    for attempt in (1, 2):
        at = T0 + 10 * attempt
        [c] = write(store, lambda at=at: store.claim("w", 1, at, 1.0))  # type: ignore[misc]
        assert c.attempt == attempt
        write(store, lambda at=at: store.reclaim(at + 5))
    record = store.get("p")
    assert record is not None and (record.state, record.attempt, record.error_type) == (
        "dead",
        2,
        "WorkerLost",
    )
    assert [t.id for t in store.tasks("dead", 10)] == ["p"]
    assert write(store, lambda: store.retry_dead(None, T0 + 100)) == 1
    record = store.get("p")
    assert record is not None and (record.state, record.attempt) == ("queued", 0)


def test_release_gives_the_attempt_back(store: Store) -> None:
    write(store, lambda: store.enqueue([new("r")], T0))
    write(store, lambda: store.claim("w", 1, T0, 30.0))
    assert write(store, lambda: store.release("w", T0 + 1)) == 1
    record = store.get("r")
    assert record is not None and (record.state, record.attempt, record.owner) == (
        "queued",
        0,
        None,
    )


def test_outcomes_retry_dead_cancelled_released(store: Store) -> None:
    write(store, lambda: store.enqueue([new(i) for i in "abcd"], T0))
    write(store, lambda: store.claim("w", 4, T0, 30.0))
    outcomes = [
        Outcome("a", 1, "retry", error_type="E", error="e", eta=T0 + 50),
        Outcome("b", 1, "dead", error_type="E", error="boom"),
        Outcome("c", 1, "cancelled"),
        Outcome("d", 1, "released", eta=T0 + 1),
    ]
    assert write(store, lambda: store.finish("w", outcomes, T0 + 1, 60)) == []
    states = {i: store.get(i) for i in "abcd"}
    assert {i: (r.state, r.attempt) for i, r in states.items() if r} == {
        "a": ("queued", 1),
        "b": ("dead", 1),
        "c": ("cancelled", 1),
        "d": ("queued", 0),
    }
    assert states["a"] is not None and states["a"].eta == pytest.approx(T0 + 50)
    assert states["b"] is not None and states["b"].error == "boom"


def test_keys_dedup_while_queued_or_running(store: Store) -> None:
    first, join, reject = (
        new("1", key="k"),
        new("2", key="k"),
        new("3", key="k", on_duplicate="reject"),
    )
    write(store, lambda: store.enqueue([first, join, reject], T0))
    assert (first.duplicate_of, join.duplicate_of, reject.duplicate_of) == (None, "1", "1")
    assert store.get("2") is None and store.get("3") is None
    write(store, lambda: store.claim("w", 1, T0, 30.0))
    again = new("4", key="k")
    write(store, lambda: store.enqueue([again], T0))
    assert again.duplicate_of == "1"  # running still holds the key
    write(store, lambda: store.finish("w", [Outcome("1", 1, "succeeded")], T0, 60))
    after = new("5", key="k")
    write(store, lambda: store.enqueue([after], T0))
    assert after.duplicate_of is None and store.get("5") is not None


def test_replace_cancels_a_queued_holder_and_asks_a_running_one_to_stop(store: Store) -> None:
    write(store, lambda: store.enqueue([new("old", key="k")], T0))
    write(store, lambda: store.enqueue([new("new", key="k", on_duplicate="replace")], T0))
    old = store.get("old")
    assert old is not None and old.state == "cancelled"
    write(store, lambda: store.claim("w", 1, T0, 30.0))  # "new" runs
    write(store, lambda: store.enqueue([new("newer", key="k", on_duplicate="replace")], T0))
    running = store.get("new")
    assert running is not None and running.state == "running" and running.cancel_requested
    assert store.get("newer") is not None


def test_a_periodic_slot_fires_once(store: Store) -> None:
    fired = [
        write(store, lambda i=i: store.fire_slot("nightly", T0, new(f"n{i}"), T0)) for i in range(3)
    ]
    assert fired == [True, False, False]
    assert write(store, lambda: store.fire_slot("nightly", T0 + 60, new("n9"), T0)) is True
    assert [t.id for t in store.tasks(None, 10)] == ["n9", "n0"] or {
        t.id for t in store.tasks(None, 10)
    } == {"n0", "n9"}


def test_cancel_of_each_state(store: Store) -> None:
    write(store, lambda: store.enqueue([new("q"), new("r")], T0))
    write(store, lambda: store.claim("w", 1, T0, 30.0))  # q runs
    assert write(store, lambda: store.cancel("r", T0)) == "cancelled"
    assert write(store, lambda: store.cancel("q", T0)) == "requested"
    assert write(store, lambda: store.cancel("nope", T0)) == "unknown"
    write(store, lambda: store.finish("w", [Outcome("q", 1, "cancelled")], T0, 60))
    assert write(store, lambda: store.cancel("q", T0)) == "finished"


def test_a_failed_batch_writes_nothing(store: Store) -> None:
    if not store.atomic_batches:
        pytest.skip("each Redis call is atomic by itself: test_redis.py checks the group")
    with contextlib.suppress(RuntimeError), store.batch():
        store.enqueue([new("a"), new("b")], T0)
        raise RuntimeError("the group failed half-way")
    assert store.get("a") is None and store.tasks(None, 10) == []


def test_depths_and_expiry(store: Store) -> None:
    write(store, lambda: store.enqueue([new("a"), new("b"), new("later", eta=T0 + 100)], T0))
    write(store, lambda: store.claim("w", 1, T0, 5.0))
    write(store, lambda: store.finish("w", [Outcome("a", 1, "succeeded")], T0 + 1, 10.0))
    d = store.depths(T0 + 2)
    assert d.by_state["succeeded"] == 1 and d.by_state["queued"] == 2
    assert (d.ready, d.scheduled, d.leases) == (1, 1, 0)
    assert d.oldest_ready_age == pytest.approx(2.0)
    assert write(store, lambda: store.purge_expired(T0 + 20)) == 1
    assert store.get("a") is None


def test_retrying_a_dead_task_whose_key_is_held_leaves_it_dead(store: Store) -> None:
    write(store, lambda: store.enqueue([new("old", key="k", attempts=1)], T0))
    write(store, lambda: store.claim("w", 1, T0, 30.0))
    write(store, lambda: store.finish("w", [Outcome("old", 1, "dead", error="x")], T0, 60))
    write(store, lambda: store.enqueue([new("other"), new("holder", key="k", eta=T0 + 60)], T0))
    write(store, lambda: store.enqueue([new("dead2", attempts=1)], T0))
    write(store, lambda: store.claim("w", 5, T0, 30.0))
    write(store, lambda: store.finish("w", [Outcome("dead2", 1, "dead", error="y")], T0, 60))
    assert write(store, lambda: store.retry_dead(None, T0 + 1)) == 1  # dead2 only
    old, dead2 = store.get("old"), store.get("dead2")
    assert old is not None and old.state == "dead"
    assert dead2 is not None and dead2.state == "queued"


def test_a_success_clears_the_error_of_an_earlier_attempt(store: Store) -> None:
    write(store, lambda: store.enqueue([new("t")], T0))
    write(store, lambda: store.claim("w", 1, T0, 1.0))
    write(store, lambda: store.reclaim(T0 + 5))  # WorkerLost, requeued
    write(store, lambda: store.claim("w", 1, T0 + 5, 30.0))
    write(store, lambda: store.finish("w", [Outcome("t", 2, "succeeded")], T0 + 6, 60))
    record = store.get("t")
    assert record is not None and (record.state, record.error_type, record.error) == (
        "succeeded",
        None,
        None,
    )


OPENER = """
import sys, time
from offload.durable._sqlite import open_sqlite
url, start = sys.argv[1], float(sys.argv[2])
while time.time() < start:
    pass
open_sqlite(url, durability="normal").close()
print("opened")
"""


@pytest.mark.durable_heavy  # 60 processes: once, in `make test`
def test_processes_opening_one_new_store_at_once_all_succeed(tmp_path: Path) -> None:
    """`uvicorn --workers 4`'s first start: every process creates the same new file at
    the same moment (SQLite answers the WAL switch "locked" at once, without waiting)."""
    import subprocess
    import sys
    import time

    for round_ in range(15):
        url = "sqlite:///" + str(tmp_path / f"new-{round_}.db")
        start = time.time() + 0.3
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", OPENER, url, str(start + i * 0.0005)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for i in range(4)
        ]
        outs = [p.communicate(timeout=60)[0] for p in procs]
        assert all(p.returncode == 0 for p in procs), outs
        assert all(out.strip() == "opened" for out in outs), outs
