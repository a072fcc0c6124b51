"""One import changed, no lifespan, a real server: SIGTERM 0.1 s after the response and
every task still finishes (uvicorn on asyncio and uvloop, hypercorn).

The request keeps its ASGI call open until its tasks end, so the server's graceful
shutdown waits for them, as it does for FastAPI's own BackgroundTasks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from offload_fastapi_support import HERE, WAIT, free_port

SERVERS = {
    "uvicorn-asyncio": ["-m", "uvicorn", "--loop", "asyncio", "--no-access-log"],
    "uvicorn-uvloop": ["-m", "uvicorn", "--loop", "uvloop", "--no-access-log"],
    "hypercorn-asyncio": ["-m", "hypercorn", "--worker-class", "asyncio"],
    "hypercorn-uvloop": ["-m", "hypercorn", "--worker-class", "uvloop"],
}


def start(server: str, port: int, out: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, *SERVERS[server], *extra, "testapp_dropin:app"]
    if server.startswith("uvicorn"):
        cmd += ["--app-dir", str(HERE), "--host", "127.0.0.1", "--port", str(port)]
    else:
        cmd += ["--bind", f"127.0.0.1:{port}"]
    env = dict(os.environ, TESTAPP_OUT=str(out), PYTHONPATH=str(HERE))
    with log.open("wb") as sink:
        return subprocess.Popen(cmd, env=env, cwd=HERE, stdout=sink, stderr=subprocess.STDOUT)


def wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + WAIT * 2
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"server not ready:\n{log.read_text()}")


@pytest.mark.parametrize("server", list(SERVERS))
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_after_the_response_lets_every_task_finish(
    server: str, sig: signal.Signals, tmp_path: Path
) -> None:
    out, log = tmp_path / "done.txt", tmp_path / "server.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(server, port, out, log)
    try:
        wait_ready(proc, url, log)
        with ThreadPoolExecutor(2) as pool:
            # Two requests in flight; the signal comes 0.1 s after the first response.
            first = pool.submit(httpx.post, f"{url}/send/a", params={"seconds": 1.0}, timeout=WAIT)
            second = pool.submit(httpx.post, f"{url}/send/b", params={"seconds": 1.0}, timeout=WAIT)
            assert first.result().status_code == 200
            time.sleep(0.1)
            proc.send_signal(sig)
            assert second.result().status_code == 200
        proc.wait(timeout=WAIT * 2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    done = sorted(out.read_text().split("\n")[:-1]) if out.exists() else []
    assert done == ["async a", "async b", "sync a", "sync b"], text
    assert "Traceback" not in text, text


GRACEFUL_TIMEOUT = {"uvicorn": "--timeout-graceful-shutdown", "hypercorn": "--graceful-timeout"}


@pytest.mark.parametrize("server", ["uvicorn-asyncio", "uvicorn-uvloop", "hypercorn-asyncio"])
def test_tasks_past_the_graceful_timeout_are_named(server: str, tmp_path: Path) -> None:
    """A 1 s graceful timeout: the server cancels the request, then exits (uvicorn by
    the re-raised signal: no at-exit drain): what is still running is named first."""
    out, log = tmp_path / "done.txt", tmp_path / "server.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(server, port, out, log, GRACEFUL_TIMEOUT[server.split("-")[0]], "1")
    try:
        wait_ready(proc, url, log)
        response = httpx.post(f"{url}/send/late", params={"seconds": 60.0}, timeout=WAIT)
        assert response.status_code == 200
        time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=WAIT * 2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "stopped waiting for a request's background tasks" in text, text
    assert "'slow_sync'" in text and "'slow_async'" in text, text
