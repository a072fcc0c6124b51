"""Helpers for the offload.fastapi tests: in-process clients and real uvicorn servers.

(A uniquely named module rather than `conftest`, so importing it can't pick up another
directory's conftest.py.)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI

HERE = Path(__file__).resolve().parent

#: Bounded waits: generous for a loaded 2-core machine, never part of an assertion.
WAIT = 15.0


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and give an httpx client talking to it in process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            yield client


def run_python(code: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """`python -c code` in a fresh interpreter (its own default runtime), output captured."""
    try:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the child hung for more than {timeout} s: {exc.stderr!r}") from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """The test app (testapp_offload.py) under uvicorn in a subprocess; output in a file."""

    def __init__(self, loop: str, log_path: Path, drain_timeout: float) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        cmd = [sys.executable, str(HERE / "serve_for_tests.py"), "testapp_offload:app"]
        cmd += ["--app-dir", str(HERE), "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--loop", loop, "--no-access-log"]
        env = dict(os.environ, TESTAPP_DRAIN_TIMEOUT=str(drain_timeout))
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + WAIT * 2
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited early ({self.process.returncode}):\n{self.log()}"
                )
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for_log(self, text: str) -> None:
        deadline = time.monotonic() + WAIT
        while text not in self.log():
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in the server log:\n{self.log()}")
            time.sleep(0.05)

    def terminate(self) -> int:
        """SIGTERM, then the exit status (killing it, and failing, if it hangs)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=WAIT * 2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"server did not exit after SIGTERM:\n{self.log()}") from None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
