"""A private redis-server for the tests (tests/ is on sys.path: `from redis_server
import RedisServer`): Debian's binary, on a free 127.0.0.1 port, in a temp dir, with
AOF on (fsync every second) so that a restart after SIGKILL keeps what was written;
killed, paused and restarted by the fault tests.

The session's shared server (`session=True`) is left out of the per-test check for
leftover children (tests/conftest.py reads SESSION_PIDS); any other server a test
starts must be stopped by it."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

#: Pids of the session-wide servers (see the module docstring).
SESSION_PIDS: set[int] = set()


def redis_server_binary() -> str:
    """The redis-server path; without one, the test is skipped locally (with the
    reason) and fails in CI (.ci/run sets OFFLOAD_REQUIRE_REDIS), where the Makefile
    installs it."""
    path = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if path is None:
        reason = "redis-server is not installed (`make system-deps` installs Debian's)"
        if os.environ.get("CI") or os.environ.get("OFFLOAD_REQUIRE_REDIS"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def server_env() -> dict[str, str]:
    """This process's environment without the sanitizers' preloads: redis-server and
    redis-cli are Debian's binaries, not ours to check (and jemalloc and a preloaded
    libasan don't mix)."""
    return {
        k: v
        for k, v in os.environ.items()
        if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "TSAN_OPTIONS", "UBSAN_OPTIONS")
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        port = random.randrange(20000, 55000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


class RedisServer:
    def __init__(
        self,
        directory: Path,
        *,
        appendfsync: str = "everysec",
        session: bool = False,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.session = session
        self.extra = extra
        self.binary = redis_server_binary()
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_cluster_port() if "--cluster-enabled" in extra else free_port()
        self.appendfsync = appendfsync
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                self.appendfsync,
                "--save",
                "",
                "--maxmemory-policy",
                "noeviction",
                "--enable-debug-command",
                "local",
                "--daemonize",
                "no",
                "--logfile",
                str(self.dir / "redis.log"),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=server_env(),
        )
        if self.session:
            SESSION_PIDS.add(self.proc.pid)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited: {log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start in 20 s")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last save (the AOF keeps what was fsynced)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class RedisClusterServers:
    """A Redis Cluster of `n` primaries (no replicas) on free 127.0.0.1 ports, made with
    `redis-cli --cluster create`; `url` names one node (clients discover the others)."""

    def __init__(self, directory: Path, n: int = 3, *, session: bool = False) -> None:
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        self.nodes = [
            RedisServer(
                directory / f"node{i}",
                session=session,
                extra=("--cluster-enabled", "yes", "--cluster-node-timeout", "5000"),
            )
            for i in range(n)
        ]
        try:
            subprocess.run(
                [cli, "--cluster", "create", *(f"127.0.0.1:{s.port}" for s in self.nodes),
                 "--cluster-replicas", "0", "--cluster-yes"],
                check=True, capture_output=True, timeout=60, env=server_env(),
            )  # fmt: skip
            self._wait_ok(cli)
        except BaseException:
            self.stop()
            raise

    def _wait_ok(self, cli: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = [
                subprocess.run(
                    [cli, "-p", str(s.port), "cluster", "info"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                    check=False,
                    env=server_env(),
                ).stdout
                for s in self.nodes
            ]
            if all("cluster_state:ok" in state for state in states):
                return
            time.sleep(0.1)
        raise RuntimeError("the Redis Cluster did not reach cluster_state:ok in 30 s")

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def stop(self) -> None:
        for s in self.nodes:
            s.stop()
