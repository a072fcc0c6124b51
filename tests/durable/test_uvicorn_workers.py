"""`uvicorn --workers 4`: four app processes share one SQLite store; every durable task
spawned through any of them runs exactly once (no crash here, so at least once is
exactly once), and the processes work each other's tasks."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_four_uvicorn_workers_share_one_store(tmp_path: Path) -> None:
    effects = tmp_path / "effects.db"
    db = sqlite3.connect(effects, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE runs (n INTEGER, pid INTEGER)")
    db.close()
    port = free_port()
    env = {
        **os.environ,
        "OFFLOAD_STORE": "sqlite:///" + str(tmp_path / "offload.db"),
        "EFFECTS_DB": str(effects),
        "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]),
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "durable.uvicorn_app:app",
            "--workers",
            "4",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(base + "/docs", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "uvicorn did not start"
                assert server.poll() is None, server.stdout.read().decode()  # type: ignore[union-attr]
                time.sleep(0.2)
        n_jobs = 400
        spawned_by: set[int] = set()
        no_keepalive = httpx.Limits(max_keepalive_connections=0)  # spread over the processes
        with httpx.Client(base_url=base, timeout=30, limits=no_keepalive) as client:
            for n in range(n_jobs):
                reply = client.post(f"/jobs/{n}")
                assert reply.status_code == 200, reply.text
                spawned_by.add(reply.json()["pid"])
        deadline = time.monotonic() + 60
        while True:
            db = sqlite3.connect(effects, timeout=30)
            rows = db.execute("SELECT n, pid FROM runs").fetchall()
            db.close()
            if len(rows) >= n_jobs:
                break
            assert time.monotonic() < deadline, f"only {len(rows)} of {n_jobs} ran"
            time.sleep(0.2)
        time.sleep(0.5)  # a second run of anything would show up now
        db = sqlite3.connect(effects, timeout=30)
        rows = db.execute("SELECT n, pid FROM runs").fetchall()
        db.close()
        assert sorted(n for n, _ in rows) == list(range(n_jobs))  # each exactly once
        assert len(spawned_by) >= 2  # requests reached several processes ...
        assert len({pid for _, pid in rows}) >= 2  # ... which worked the one queue
        store = sqlite3.connect(tmp_path / "offload.db")
        states = dict(store.execute("SELECT state, count(*) FROM offload_tasks GROUP BY state"))
        store.close()
        assert states == {"succeeded": n_jobs}
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            out, _ = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            out, _ = server.communicate()
        assert server.returncode == 0, out.decode()[-3000:]
        text = out.decode()
        assert "Traceback" not in text, text[-3000:]
