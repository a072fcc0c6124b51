"""The two stores against each other: Hypothesis drives random sequences of store calls
(enqueues with keys, delays and every on_duplicate; claims by two workers; renewals,
acks of every kind, stale acks included; reclaims, releases, cancels, dead-letter
retries, purges, periodic slots; the clock moving on) into the SQLite store in memory
and a Redis store at once, and after every step both must answer the same: what each
call returned, and every task's state, attempt, owner, key and cancel flag, and the
queue depths. The contract suite (test_store.py) pins single behaviours; this one
finds the sequences nobody thought of."""

from __future__ import annotations

import itertools
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from redis_server import RedisServer

from offload.durable._redis import open_redis
from offload.durable._sqlite import open_sqlite
from offload.durable._store import NewTask, Outcome, Store

from .conftest import redis_url_for

T0 = 1_800_000_000.0
OWNERS = ("w1", "w2")
KEYS = (None, None, "k1", "k2")
TTL = 60.0
LEASE = 5.0


def new_task(
    task_id: str, eta: float, key: str | None, on_duplicate: str, attempts: int
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


_server: RedisServer | None = None


class StoresAgree(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        assert _server is not None
        self.sqlite: Store = open_sqlite("memory://", durability="normal")
        self.redis: Store = open_redis(redis_url_for(_server), durability="normal")
        self.now = T0
        self.ids: list[str] = []
        self.claims: list[tuple[str, str, int]] = []  # (owner, id, attempt) ever handed out
        self.counter = itertools.count(1)

    def both(self, call: Any) -> Any:
        """call(store) on each store; both must return the same."""
        with self.sqlite.batch():
            a = call(self.sqlite)
        with self.redis.batch():
            b = call(self.redis)
        assert a == b, (a, b)
        return a

    @initialize()
    def start(self) -> None:
        pass

    @rule(
        specs=st.lists(
            st.tuples(
                st.sampled_from([0.0, 0.0, 3.0, 8.0]),
                st.sampled_from(KEYS),
                st.sampled_from(["join", "reject", "replace"]),
                st.sampled_from([1, 2]),
            ),
            min_size=1,
            max_size=3,
        )
    )
    def enqueue(self, specs: list[tuple[float, str | None, str, int]]) -> None:
        ids = [f"t{next(self.counter)}" for _ in specs]
        self.ids += ids

        def call(store: Store) -> list[str | None]:
            batch = [
                new_task(i, self.now + delay, key, dup, attempts)
                for i, (delay, key, dup, attempts) in zip(ids, specs)
            ]
            store.enqueue(batch, self.now)
            return [t.duplicate_of for t in batch]

        self.both(call)

    @rule(owner=st.sampled_from(OWNERS), key=st.sampled_from(KEYS))
    def enqueue_and_claim(self, owner: str, key: str | None) -> None:
        """The common path in one step, so that sequences reach the acks often."""
        self.enqueue([(0.0, key, "join", 2)])
        self.claim(owner)

    @rule(owner=st.sampled_from(OWNERS))
    def claim(self, owner: str) -> None:
        claimed = self.both(
            lambda s: sorted((c.id, c.attempt) for c in s.claim(owner, 1000, self.now, LEASE))
        )
        self.claims += [(owner, i, a) for i, a in claimed]

    @precondition(lambda self: self.claims)
    @rule(
        data=st.data(),
        kind=st.sampled_from(["succeeded", "retry", "dead", "cancelled", "released"]),
    )
    def finish(self, data: st.DataObject, kind: str) -> None:
        owner, task_id, attempt = data.draw(st.sampled_from(self.claims))
        outcome = Outcome(task_id, attempt, kind, b"\x01", "E", "e", self.now + 2.0)
        self.both(lambda s: s.finish(owner, [outcome], self.now, TTL))

    @precondition(lambda self: self.claims)
    @rule(owner=st.sampled_from(OWNERS))
    def renew(self, owner: str) -> None:
        ids = [i for o, i, _ in self.claims if o == owner]
        self.both(lambda s: sorted(s.renew(owner, ids, self.now, LEASE)))

    @rule()
    def reclaim(self) -> None:
        self.both(lambda s: s.reclaim(self.now))

    @rule(owner=st.sampled_from(OWNERS))
    def release(self, owner: str) -> None:
        self.both(lambda s: s.release(owner, self.now))

    @precondition(lambda self: self.ids)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(self.ids))
        self.both(lambda s: s.cancel(task_id, self.now))

    @rule()
    def retry_dead(self) -> None:
        self.both(lambda s: s.retry_dead(None, self.now))

    @rule(state=st.sampled_from(["dead", "cancelled", "succeeded"]))
    def purge(self, state: str) -> None:
        self.both(lambda s: s.purge(state, None))

    @rule()
    def purge_expired(self) -> None:
        self.both(lambda s: s.purge_expired(self.now))

    @rule(slot=st.sampled_from([T0, T0 + 60, T0 + 120]))
    def fire_slot(self, slot: float) -> None:
        task_id = f"t{next(self.counter)}"
        self.ids.append(task_id)
        self.both(
            lambda s: s.fire_slot(
                "nightly", slot, new_task(task_id, self.now, None, "join", 1), self.now
            )
        )

    @rule(seconds=st.sampled_from([1.0, 4.0, 7.0, 65.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @invariant()
    def same_tasks(self) -> None:
        for task_id in self.ids:
            a, b = self.sqlite.get(task_id), self.redis.get(task_id)
            view = [
                None if r is None else (r.state, r.attempt, r.owner, r.key, r.cancel_requested)
                for r in (a, b)
            ]
            assert view[0] == view[1], (task_id, view)

    @invariant()
    def same_depths(self) -> None:
        a, b = self.sqlite.depths(self.now), self.redis.depths(self.now)
        assert (a.by_state, a.ready, a.scheduled, a.leases, a.expired_leases) == (
            b.by_state,
            b.ready,
            b.scheduled,
            b.leases,
            b.expired_leases,
        ), (a, b)

    def teardown(self) -> None:
        self.sqlite.close()
        self.redis.close()


def test_sqlite_and_redis_stores_agree_on_every_sequence(redis_server: RedisServer) -> None:
    global _server
    _server = redis_server
    StoresAgree.TestCase.settings = settings(
        max_examples=int(os.environ.get("MODEL_EXAMPLES", "60")),
        stateful_step_count=50,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    try:
        StoresAgree.TestCase().runTest()
    finally:
        _server = None


pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
