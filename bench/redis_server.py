"""A private `redis-server` for one benchmark run: a free 127.0.0.1 port, a temporary
directory, stopped on exit; `flush()` between contenders. Standard library only (the
peers' virtualenvs and ours both import it).

    with RedisServer() as server:
        server.url          # "redis://127.0.0.1:PORT/0"
        server.flush()      # FLUSHALL, then an AOF rewrite of the empty data set
        server.version      # "7.0.15"

Configuration, the same for every contender: append-only file with `appendfsync
everysec` (what a durable queue runs with in production; RDB snapshots off, so no fork
lands in a sample), automatic AOF rewrites off (`flush()` rewrites the AOF of the empty
data set between samples instead), `maxmemory-policy noeviction` (the default, written
out: offload's Redis store requires it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import final

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT = 10.0  # s for the server to answer PING


class RedisError(RuntimeError):
    """The server could not start, or answered a command with an error."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _encode(*args: str) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Reply:
    """Reads one RESP2 reply from a socket (the few types our commands return)."""

    def __init__(self, sock: socket.socket) -> None:
        self._file = sock.makefile("rb")

    def read(self) -> object:
        line = self._file.readline()
        if not line:
            raise RedisError("connection closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self._file.read(size + 2)[:-2]
            return data.decode(errors="replace")
        if kind == b"*":
            return [self.read() for _ in range(int(rest))]
        raise RedisError(f"unexpected reply {line!r}")


def command(port: int, *args: str, timeout: float = 30.0) -> object:
    """One command on a fresh connection; its reply (an error reply raises)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(_encode(*args))
        return _Reply(sock).read()


@final
class RedisServer:
    """`redis-server` as a child process in its own temporary directory."""

    def __init__(self, where: Path | None = None) -> None:
        if not os.path.exists(REDIS_SERVER):
            raise RedisError(
                "redis-server not found: install the Debian package"
                " (bash tools/system-deps.sh redis-server)"
            )
        self.dir = Path(tempfile.mkdtemp(prefix="redis-bench-", dir=where))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = self.dir / "redis.log"
        # With `--port 0`-style races (the port taken between free_port() and the
        # server's bind) the server exits: start() then says so with the log's tail.
        self._proc = subprocess.Popen(
            [
                REDIS_SERVER,
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--dir", str(self.dir), "--logfile", str(self.log)),
                *("--save", "", "--appendonly", "yes", "--appendfsync", "everysec"),
                *("--auto-aof-rewrite-percentage", "0"),
                *("--maxmemory-policy", "noeviction", "--daemonize", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()
        self.version = str(self.info("server").get("redis_version", "?"))

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._proc.poll() is not None:
                raise RedisError(f"redis-server exited {self._proc.returncode}: {self._tail()}")
            try:
                if command(self.port, "PING", timeout=1.0) == "PONG":
                    return
            except (OSError, RedisError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RedisError(f"redis-server did not answer in {START_TIMEOUT:g} s")
            time.sleep(0.02)

    def _tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-1500:]
        except OSError:
            return "(no log)"

    def info(self, section: str = "") -> dict[str, str]:
        reply = command(self.port, "INFO", *([section] if section else []))
        fields = {}
        for line in str(reply).splitlines():
            if ":" in line and not line.startswith("#"):
                key, value = line.split(":", 1)
                fields[key] = value
        return fields

    def flush(self) -> None:
        """Everything gone, and the AOF rewritten to the empty data set (waited for)."""
        command(self.port, "FLUSHALL")
        command(self.port, "BGREWRITEAOF")
        deadline = time.monotonic() + 60
        while self.info("persistence").get("aof_rewrite_in_progress") != "0" or (
            self.info("persistence").get("aof_rewrite_scheduled") != "0"
        ):
            if time.monotonic() > deadline:
                raise RedisError("AOF rewrite did not finish in 60 s")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


if __name__ == "__main__":  # a quick check: start, flush, print the version, stop
    with RedisServer() as server:
        server.flush()
        print(server.url, server.version)
