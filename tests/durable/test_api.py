"""The durable tier through its public API, in one process: spawn, persisted,
results, retries, timeouts, delays, keys, cancel, producer-only runtimes, the
release at shutdown, durable periodic schedules; on asyncio and uvloop, on SQLite and
in memory. Cross-process behaviour (kill -9, SIGTERM, leases) is in test_processes.py.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
import time
from typing import Any

import pytest
from waiting import wait_until

import offload
from offload.durable import DurableTaskFailed, StoreError

from . import tasks
from .conftest import Arun, MakeRuntime


def test_spawn_persists_and_runs_sync_and_async_functions(
    arun: Arun, make_runtime: MakeRuntime, store_url: str
) -> None:
    rt = make_runtime(store=store_url)

    async def main() -> None:
        a = rt.durable.spawn(tasks.add, 2, 3)
        b = rt.durable.spawn(tasks.async_add, 4, 5)
        await a.persisted()
        assert await a.result(10) == 5
        assert await b.result(10) == 9
        info = rt.durable.get(a.id)
        assert info is not None and (info.state, info.attempt, info.result) == ("succeeded", 1, 5)
        assert info.function.endswith("durable.tasks:add") and info.done
        await rt.shutdown(5)

    arun(main())


def test_arguments_come_back_typed_by_the_annotations(
    make_runtime: MakeRuntime, store_url: str
) -> None:
    rt = make_runtime(store=store_url)
    when = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    handle = rt.durable.spawn(tasks.shift, tasks.Point(1, 2), when)
    assert handle.result_sync(10) == tasks.Point(2, 2032)


def test_flush_and_wait_persisted(make_runtime: MakeRuntime, store_url: str) -> None:
    rt = make_runtime(store=store_url, durable_concurrency=0)
    handles = [rt.durable.spawn(tasks.add, i, i) for i in range(500)]
    rt.durable.flush_sync(10)
    assert all(h._state == 1 for h in handles)  # every one committed
    assert rt.durable.depths().by_state["queued"] == 500
    late = rt.durable.spawn(tasks.add, 1, 1)
    late.wait_persisted(10)
    assert rt.durable.get(late.id) is not None


def test_sync_commit_returns_committed_and_refuses_an_event_loop(
    arun: Arun, make_runtime: MakeRuntime, store_url: str
) -> None:
    rt = make_runtime(store=store_url, durable_concurrency=0)
    handle = rt.durable.options(sync_commit=True).spawn(tasks.add, 1, 2)
    assert handle._state == 1 and rt.durable.get(handle.id) is not None

    async def on_loop() -> None:
        with pytest.raises(RuntimeError, match="block the running event loop"):
            rt.durable.options(sync_commit=True).spawn(tasks.add, 1, 2)

    arun(on_loop())


def test_retries_count_attempts_then_succeed(make_runtime: MakeRuntime, store_url: str) -> None:
    tasks.failures_left["r1"] = 2
    rt = make_runtime(store=store_url)
    handle = rt.durable.options(retries=3, backoff=0.01).spawn(tasks.fail_then_succeed, "r1")
    assert handle.result_sync(10) == "ok"
    info = handle.info()
    assert info is not None and info.attempt == 3


def test_the_last_failure_goes_to_the_dead_letter_set_reported_once(
    make_runtime: MakeRuntime, store_url: str, offload_log: pytest.LogCaptureFixture
) -> None:
    rt = make_runtime(store=store_url)
    handle = rt.durable.options(retries=1, backoff=0.01).spawn(tasks.fail, "kaput")
    with pytest.raises(DurableTaskFailed, match="ValueError: kaput") as failed:
        handle.result_sync(10)
    assert failed.value.info.state == "dead" and failed.value.error_type == "ValueError"
    assert [t.id for t in rt.durable.tasks("dead")] == [handle.id]
    warnings = [r for r in offload_log.records if "attempt 1 of 2 failed" in r.getMessage()]
    errors = [r for r in offload_log.records if "dead-letter" in r.getMessage()]
    assert len(warnings) == 1 and len(errors) == 1 and errors[0].exc_info is not None
    assert not [r for r in offload_log.records if r.getMessage().startswith("offload task ")]


def test_retry_on_limits_what_is_retried(make_runtime: MakeRuntime, store_url: str) -> None:
    rt = make_runtime(store=store_url)
    handle = rt.durable.options(retries=5, retry_on=ConnectionError).spawn(tasks.fail, "no")
    with pytest.raises(DurableTaskFailed):
        handle.result_sync(10)
    info = handle.info()
    assert info is not None and info.attempt == 1  # a ValueError is not worth a retry


def test_retry_exception_asks_for_another_attempt(
    make_runtime: MakeRuntime, store_url: str
) -> None:
    rt = make_runtime(store=store_url)
    handle = rt.durable.options(retries=2).spawn(tasks.ask_retry, 0.01)
    with pytest.raises(DurableTaskFailed):
        handle.result_sync(10)
    info = handle.info()
    assert info is not None and info.attempt == 3


def test_timeout_fails_the_attempt(make_runtime: MakeRuntime, store_url: str) -> None:
    rt = make_runtime(store=store_url)
    handle = rt.durable.options(timeout=0.05).spawn(tasks.async_sleep, 5.0)
    with pytest.raises(DurableTaskFailed) as failed:
        handle.result_sync(10)
    assert failed.value.error_type == "TimeoutError"


def test_delay_shows_scheduled_then_runs(
    arun: Arun, make_runtime: MakeRuntime, store_url: str
) -> None:
    rt = make_runtime(store=store_url)

    async def main() -> None:
        handle = rt.durable.options(delay=0.3).spawn(tasks.add, 1, 1)
        await handle.persisted()
        info = await rt.durable.aget(handle.id)
        assert info is not None and info.state == "scheduled"
        assert await handle.result(10) == 2
        info = await rt.durable.aget(handle.id)
        assert info is not None and info.started is not None and info.started >= info.created + 0.29
        await rt.shutdown(5)

    arun(main())


def test_at_runs_at_an_aware_time(make_runtime: MakeRuntime, store_url: str) -> None:
    rt = make_runtime(store=store_url)
    at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=0.2)
    handle = rt.durable.options(at=at).spawn(tasks.add, 2, 2)
    assert handle.result_sync(10) == 4
    info = handle.info()
    assert info is not None and info.started is not None and info.started >= at.timestamp() - 0.01


def test_keys_join_reject_and_replace(
    arun: Arun, make_runtime: MakeRuntime, store_url: str
) -> None:
    rt = make_runtime(store=store_url, durable_concurrency=0)

    async def main() -> None:
        first = rt.durable.options(key="k").spawn(tasks.add, 1, 1)
        joined = rt.durable.options(key="k").spawn(tasks.add, 2, 2)
        rejected = rt.durable.options(key="k", on_duplicate="reject").spawn(tasks.add, 3, 3)
        await first.persisted()
        await joined.persisted()
        assert joined.joined and joined.id == first.id
        with pytest.raises(offload.Duplicate, match="already queued or running"):
            await rejected.persisted()
        replacing = rt.durable.options(key="k", on_duplicate="replace").spawn(tasks.add, 4, 4)
        await replacing.persisted()
        assert not replacing.joined
        old = await rt.durable.aget(first.id)
        assert old is not None and old.state == "cancelled"
        await rt.shutdown(5)

    arun(main())


def test_cancel_queued_scheduled_and_running(make_runtime: MakeRuntime, store_url: str) -> None:
    rt = make_runtime(store=store_url)
    tasks.gate.clear()
    try:
        running = rt.durable.spawn(tasks.wait_gate)
        scheduled = rt.durable.options(delay=60).spawn(tasks.add, 1, 1)
        assert wait_until(lambda: (i := running.info()) is not None and i.state == "running", 10)
        assert scheduled.cancel() == "cancelled"
        assert running.cancel() == "requested"
        # the worker sees the request at its next lease renewal; a thread can't be
        # interrupted, so the attempt ends when the call returns, as cancelled
        tasks.gate.set()
        assert wait_until(lambda: (i := running.info()) is not None and i.done, 40)
        assert running.info().state in ("cancelled", "succeeded")  # type: ignore[union-attr]
        assert scheduled.cancel() == "finished"
    finally:
        tasks.gate.set()


def test_cancel_of_a_running_coroutine_stops_it(make_runtime: MakeRuntime, sqlite_url: str) -> None:
    rt = make_runtime(store=sqlite_url, lease=0.3)
    handle = rt.durable.spawn(tasks.async_sleep, 30.0)
    assert wait_until(lambda: (i := handle.info()) is not None and i.state == "running", 10)
    assert handle.cancel() == "requested"
    assert wait_until(lambda: (i := handle.info()) is not None and i.state == "cancelled", 10)


def test_a_producer_only_runtime_runs_nothing_and_a_worker_runs_it(
    make_runtime: MakeRuntime, sqlite_url: str
) -> None:
    producer = make_runtime(store=sqlite_url, durable_concurrency=0)
    handle = producer.durable.spawn(tasks.add, 20, 22)
    handle.wait_persisted(10)
    time.sleep(0.1)
    info = handle.info()
    assert info is not None and info.state == "queued"
    worker = make_runtime(store=sqlite_url)
    worker.durable.start()
    assert handle.result_sync(10) == 42  # the producer reads the worker's result
    worker.close(5)


def test_shutdown_releases_running_attempts_for_another_worker(
    make_runtime: MakeRuntime, sqlite_url: str, offload_log: pytest.LogCaptureFixture
) -> None:
    first = make_runtime(store=sqlite_url, lease=30.0)
    handle = first.durable.spawn(tasks.async_sleep, 30.0)
    assert wait_until(lambda: (i := handle.info()) is not None and i.state == "running", 10)
    assert first.close(0.3) == set()  # released, so not reported as unfinished
    info = make_runtime(store=sqlite_url, durable_concurrency=0).durable.get(handle.id)
    assert info is not None and (info.state, info.attempt, info.owner) == ("queued", 0, None)
    assert any("released for another worker" in r.getMessage() for r in offload_log.records)


def test_decorated_durable_function(make_runtime: MakeRuntime, sqlite_url: str) -> None:
    rt = make_runtime(store=sqlite_url)
    previous = offload._replace_default_runtime(rt)
    try:
        handle = tasks.decorated.spawn(21)
        assert handle.result_sync(10) == 42
        assert tasks.decorated(5) == 10  # still a plain call
        info = handle.info()
        assert info is not None and info.max_attempts == 3
    finally:
        offload._replace_default_runtime(previous)


def test_durable_periodic_fires_once_per_slot_across_runtimes(
    make_runtime: MakeRuntime, sqlite_url: str
) -> None:
    a = make_runtime(store=sqlite_url)
    b = make_runtime(store=sqlite_url)
    for rt in (a, b):
        rt.threads.spawn(abs, -1).result(10)  # started: a registration starts at once
        offload.periodic(every=0.2, durable=True, name="tick", runtime=rt)(tasks.tick)
    time.sleep(1.3)
    runs_a, runs_b = a.schedules()[0].runs, b.schedules()[0].runs
    a.close(5)
    b.close(5)
    checker = make_runtime(store=sqlite_url, durable_concurrency=0)
    rows = [t for t in checker.durable.tasks(limit=1000) if t.name == "tick"]
    assert runs_a >= 3 and runs_b >= 3  # both fired every slot ...
    assert len(rows) <= max(runs_a, runs_b) + 1  # ... and each slot ran once in all
    assert len(rows) >= 3


def test_result_from_another_thread_and_unknown_ids(
    make_runtime: MakeRuntime, store_url: str
) -> None:
    rt = make_runtime(store=store_url)
    handle = rt.durable.spawn(tasks.add, 1, 2)
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(handle.result_sync(10)))
    t.start()
    t.join(20)
    assert got == [3]
    assert rt.durable.get("no-such-task") is None
    with pytest.raises(TypeError):
        rt.durable.get(42)  # type: ignore[arg-type]


def test_spawn_after_close_is_refused(make_runtime: MakeRuntime, store_url: str) -> None:
    rt = make_runtime(store=store_url)
    rt.durable.spawn(tasks.add, 1, 1).wait_persisted(10)
    rt.close(5)
    with pytest.raises(StoreError, match="closed"):
        rt.durable.spawn(tasks.add, 1, 1)


def test_unknown_store_scheme_is_refused_at_the_call_site() -> None:
    with pytest.raises(ValueError, match="unknown durable store"):
        offload.Runtime(store="postgres://x")
    asyncio.get_event_loop_policy()  # (nothing else was started)


KEY = "a signing key of 32 bytes, really"


def test_signed_pickle_round_trip_and_a_worker_without_the_key(
    make_runtime: MakeRuntime, sqlite_url: str
) -> None:
    rt = make_runtime(store=sqlite_url, serializer="pickle", signing_key=KEY)
    assert rt.durable.spawn(tasks.bump, tasks.Opaque(1)).result_sync(10) == tasks.Opaque(2)
    with pytest.raises(TypeError, match="serializer='pickle'"):  # msgpack can't carry it
        make_runtime(store=sqlite_url, durable_concurrency=0).durable.spawn(
            tasks.bump, tasks.Opaque(1)
        )
    rt.close(5)  # (first: a worker with the key would run the next task itself)
    producer = make_runtime(
        store=sqlite_url, durable_concurrency=0, serializer="pickle", signing_key=KEY
    )
    handle = producer.durable.spawn(tasks.bump, tasks.Opaque(5))
    handle.wait_persisted(10)
    keyless = make_runtime(store=sqlite_url)  # this worker can't check the signature
    keyless.durable.start()
    assert wait_until(lambda: (i := producer.durable.get(handle.id)) is not None and i.done, 10)
    info = producer.durable.get(handle.id)
    assert info is not None and info.state == "dead" and "signing key" in (info.error or "")


def test_a_tampered_pickle_is_dead_lettered_not_run(
    make_runtime: MakeRuntime, sqlite_url: str
) -> None:
    import sqlite3

    producer = make_runtime(
        store=sqlite_url, durable_concurrency=0, serializer="pickle", signing_key=KEY
    )
    handle = producer.durable.spawn(tasks.bump, tasks.Opaque(7))
    handle.wait_persisted(10)
    import base64

    path = sqlite_url[len("sqlite:///") :]
    db = sqlite3.connect(path)
    (payload,) = db.execute(
        "SELECT payload FROM offload_tasks WHERE id = ?", (handle.id,)
    ).fetchone()
    raw = bytearray(base64.b64decode(payload))
    raw[-1] ^= 1  # one bit of the pickle flipped: the signature no longer matches
    db.execute(
        "UPDATE offload_tasks SET payload = ? WHERE id = ?",
        (base64.b64encode(bytes(raw)).decode(), handle.id),
    )
    db.commit()
    db.close()
    before = len(tasks.ran)
    worker = make_runtime(store=sqlite_url, serializer="pickle", signing_key=KEY)
    worker.durable.start()
    assert wait_until(lambda: (i := producer.durable.get(handle.id)) is not None and i.done, 10)
    info = producer.durable.get(handle.id)
    assert info is not None and info.state == "dead" and "signature" in (info.error or "")
    assert not [r for r in tasks.ran[before:] if r[0] == "bump"]
