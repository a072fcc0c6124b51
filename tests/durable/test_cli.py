"""`python -m offload`: status, dlq list/retry/purge and worker, as real subprocesses.

The store each test reads is filled through the store interface (`_store.Store`), so
every state is there at once: ready, scheduled, running with a live lease, running with
an expired lease, succeeded, dead and cancelled. The worker tests spawn through the
public API and let `python -m offload worker` run the tasks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import offload
from offload.durable._codec import make_codec
from offload.durable._sqlite import open_sqlite
from offload.durable._store import NewTask, Outcome

#: Bounded waits: generous for a loaded 2-core machine, never part of an assertion.
WAIT = 30.0
DEAD_ERROR = "Traceback (most recent call last):\n  ...\nValueError: the charge was declined\n"


def offload_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m offload ARGS`, its output captured (failing, not hanging, if it hangs)."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "offload", *args],
            capture_output=True,
            text=True,
            timeout=WAIT * 2,
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"python -m offload {args} hung: {exc.stderr!r}") from None


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout


def new_task(task_id: str, eta: float, now: float, fn: str = "billing:charge") -> NewTask:
    payload = make_codec("msgpack", None).encode_call(fn, (task_id,), {})
    return NewTask(task_id, fn, fn, payload, "msgpack", eta, 3, None, None, (), now - 60)


@pytest.fixture
def store_url(tmp_path: Path) -> Iterator[str]:
    """A store with 2 ready, 1 scheduled, 2 running (live, expired lease), 1 succeeded,
    2 dead, 1 cancelled tasks; the oldest ready one waited 50 s."""
    url = f"sqlite:///{tmp_path / 'ops.db'}"
    store = open_sqlite(url, durability="normal")
    now = time.time()
    try:
        with store.batch():  # each claimed as soon as it is queued: a claim takes any due task
            store.enqueue([new_task("live", now - 500, now)], now)
            assert [c.id for c in store.claim("worker-a", 1, now, 3600.0)] == ["live"]
            store.enqueue([new_task("gone", now - 2000, now)], now)  # its lease ran out long ago
            assert [c.id for c in store.claim("worker-b", 1, now - 1000, 1.0)] == ["gone"]
        with store.batch():
            store.enqueue([new_task(i, now - 300, now) for i in ("ok", "dead-1", "dead-2")], now)
            assert len(store.claim("worker-a", 3, now, 3600.0)) == 3
            outcomes = [
                Outcome("ok", 1, "succeeded", result=make_codec("msgpack", None).encode_result(5))
            ]
            outcomes += [
                Outcome(i, 1, "dead", error_type="ValueError", error=DEAD_ERROR)
                for i in ("dead-1", "dead-2")
            ]
            assert store.finish("worker-a", outcomes, now, 3600.0) == []
        with store.batch():
            store.enqueue(
                [new_task("ready-1", now - 50, now), new_task("ready-2", now - 10, now)], now
            )
            store.enqueue(
                [new_task("later", now + 3600, now), new_task("dropped", now + 3600, now)], now
            )
            assert store.cancel("dropped", now) == "cancelled"
    finally:
        store.close()
    yield url


def status_json(url: str) -> dict[str, Any]:
    result = offload_cli("status", "--store", url, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


# -- status ---------------------------------------------------------------------------------
def test_status_json_counts_every_state(store_url: str) -> None:
    status = status_json(store_url)
    assert status["by_state"] == {
        "queued": 3,
        "running": 2,
        "succeeded": 1,
        "dead": 2,
        "cancelled": 1,
    }
    assert status["ready"] == 2
    assert status["scheduled"] == 1
    assert status["leases"] == 1
    assert status["expired_leases"] == 1
    assert 45 <= status["oldest_ready_age"] < 3600


def test_status_text(store_url: str) -> None:
    result = offload_cli("status", "--store", store_url)
    assert result.returncode == 0, result.stderr
    lines = [" ".join(line.split()) for line in result.stdout.splitlines()]
    assert f"store: {store_url}" in lines
    for state, count in [("queued", 3), ("running", 2), ("succeeded", 1), ("dead", 2)]:
        assert f"{state} {count}" in lines, result.stdout
    assert "ready now 2 scheduled 1" in lines
    assert "leases 1 live, 1 expired" in lines
    assert any(line.startswith("oldest ready task waited") for line in lines)


def test_status_of_a_new_store_says_it_is_empty(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    open_sqlite(url, durability="normal").close()
    status = status_json(url)
    assert sum(status["by_state"].values()) == 0
    assert status["oldest_ready_age"] is None


@pytest.mark.parametrize("command", [["status"], ["dlq", "list"], ["dlq", "purge", "--all"]])
def test_a_mistyped_store_path_is_not_created(tmp_path: Path, command: list[str]) -> None:
    for url in (f"sqlite:///{tmp_path / 'typo.db'}", "sqlite:///typo.db"):
        result = offload_cli(*command, "--store", url, cwd=tmp_path)
        assert result.returncode == 1
        assert "no durable store at" in result.stderr and "typo.db" in result.stderr
        no_traceback(result)
    assert list(tmp_path.iterdir()) == []


# -- dlq ---------------------------------------------------------------------------------------
def test_dlq_list_text_and_json(store_url: str) -> None:
    text = offload_cli("dlq", "list", "--store", store_url)
    assert text.returncode == 0, text.stderr
    rows = [line for line in text.stdout.splitlines() if line.startswith("dead-")]
    assert sorted(row.split()[0] for row in rows) == ["dead-1", "dead-2"]
    assert all("ValueError: the charge was declined" in row for row in rows)
    assert "2 dead-lettered task(s)" in text.stdout

    listed = offload_cli("dlq", "list", "--json", "--store", store_url)
    assert listed.returncode == 0, listed.stderr
    dead = json.loads(listed.stdout)
    assert sorted(t["id"] for t in dead) == ["dead-1", "dead-2"]
    assert {t["state"] for t in dead} == {"dead"}
    assert {t["error_type"] for t in dead} == {"ValueError"}


def test_dlq_retry_one_then_all(store_url: str) -> None:
    one = offload_cli("dlq", "retry", "dead-1", "--store", store_url)
    assert one.returncode == 0, one.stderr
    assert "1 task(s) queued again" in one.stdout
    status = status_json(store_url)
    assert status["by_state"]["dead"] == 1
    assert status["by_state"]["queued"] == 4

    every = offload_cli("dlq", "retry", "--all", "--store", store_url)
    assert every.returncode == 0, every.stderr
    assert "1 task(s) queued again" in every.stdout
    status = status_json(store_url)
    assert status["by_state"]["dead"] == 0
    assert status["by_state"]["queued"] == 5


def test_dlq_purge_one_then_all(store_url: str) -> None:
    one = offload_cli("dlq", "purge", "dead-2", "--store", store_url)
    assert one.returncode == 0, one.stderr
    assert "1 task(s) purged" in one.stdout
    assert status_json(store_url)["by_state"]["dead"] == 1

    every = offload_cli("dlq", "purge", "--all", "--store", store_url)
    assert every.returncode == 0, every.stderr
    assert "1 task(s) purged" in every.stdout
    status = status_json(store_url)
    assert status["by_state"]["dead"] == 0
    assert status["by_state"]["succeeded"] == 1  # only the dead-letter set is purged


@pytest.mark.parametrize("action", ["retry", "purge"])
def test_dlq_without_ids_or_all_is_refused(store_url: str, action: str) -> None:
    result = offload_cli("dlq", action, "--store", store_url)
    assert result.returncode == 2
    assert "name the task ids, or pass --all" in result.stderr
    no_traceback(result)
    assert status_json(store_url)["by_state"]["dead"] == 2


def test_dlq_with_ids_and_all_is_refused(store_url: str) -> None:
    result = offload_cli("dlq", "purge", "dead-1", "--all", "--store", store_url)
    assert result.returncode == 2
    assert "not both" in result.stderr
    no_traceback(result)
    assert status_json(store_url)["by_state"]["dead"] == 2


@pytest.mark.parametrize("action", ["retry", "purge"])
def test_dlq_names_the_ids_it_did_not_find(store_url: str, action: str) -> None:
    """A mistyped id (or one not dead-lettered) is reported, not silently counted 0."""
    result = offload_cli("dlq", action, "dead-1", "no-such-id", "ready-1", "--store", store_url)
    assert result.returncode == 1, result.stdout
    assert "no-such-id" in result.stderr and "ready-1" in result.stderr
    assert "not in the dead-letter set" in result.stderr
    no_traceback(result)
    status = status_json(store_url)
    assert status["by_state"]["dead"] == 1  # dead-1 was still handled
    assert status["ready"] == 2 + (action == "retry")


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("store", "says"),
    [
        ("redis2://localhost/0", "unknown durable store"),
        ("offload.db", "unknown durable store"),
        ("sqlite:////nonexistent-dir/sub/ops.db", "nonexistent-dir"),
    ],
)
@pytest.mark.parametrize("command", [["status"], ["dlq", "list"], ["worker"]])
def test_a_bad_store_url_is_a_clear_error(
    tmp_path: Path, store: str, says: str, command: list[str]
) -> None:
    result = offload_cli(*command, "--store", store, cwd=tmp_path)
    assert result.returncode != 0
    assert says in result.stderr, result.stderr
    no_traceback(result)
    assert not (tmp_path / "offload.db").exists()


def test_bad_worker_options_are_clear_errors(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    for option, says in [("--concurrency=-1", "durable_concurrency"), ("--lease=0", "lease")]:
        result = offload_cli("worker", "--store", url, option)
        assert result.returncode == 2, result.stderr
        assert says in result.stderr
        no_traceback(result)


def test_worker_with_a_module_that_does_not_import(tmp_path: Path) -> None:
    result = offload_cli(
        "worker", "--store", f"sqlite:///{tmp_path / 'w.db'}", "--import", "nonexistent.module"
    )
    assert result.returncode != 0
    assert "nonexistent.module" in result.stderr
    assert "cannot import" in result.stderr
    no_traceback(result)


# -- the worker ---------------------------------------------------------------------------------------
@pytest.fixture
def tasks_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A task module importable here and by the worker (which runs in tmp_path)."""
    name = f"cli_tasks_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            import asyncio

            def add(a, b):
                return a + b

            async def slow_double(x):
                await asyncio.sleep(0.01)
                return 2 * x
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__(name)
    yield module
    sys.modules.pop(name, None)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_worker_runs_tasks_and_exits_0_on_a_signal(
    tmp_path: Path, tasks_module: Any, sig: signal.Signals, loop: str
) -> None:
    url = f"sqlite:///{tmp_path / 'work.db'}"
    producer = offload.Runtime(store=url, durable_concurrency=0)
    try:
        handles = [producer.durable.spawn(tasks_module.add, i, 1) for i in range(20)]
        handles += [producer.durable.spawn(tasks_module.slow_double, i) for i in range(5)]
        for handle in handles:
            handle.wait_persisted(WAIT)
        log = tmp_path / "worker.log"
        with log.open("wb") as out:
            worker = subprocess.Popen(
                [sys.executable, "-m", "offload", "worker", "--store", url]
                + ["--import", tasks_module.__name__, "--concurrency", "4", "--loop", loop],
                cwd=tmp_path,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            results = [handle.result_sync(WAIT) for handle in handles]
            assert results == [i + 1 for i in range(20)] + [2 * i for i in range(5)]
            worker.send_signal(sig)
            assert worker.wait(WAIT) == 0, log.read_text()
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        text = log.read_text()
        assert "stopping" in text
        assert "Traceback" not in text, text
    finally:
        producer.close(10)
