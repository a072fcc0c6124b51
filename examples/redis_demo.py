"""`make demo`, part two: durable tasks on Redis, two worker processes sharing one queue.

Starts a private redis-server (Debian's; AOF on) on 127.0.0.1 and a free port in a temp
dir, then two `python -m offload worker --store redis://...` processes. This process
spawns 2,000 invoices (`examples/redis_jobs.py`) and prints how many each worker ran.
Then it spawns 200 slower ones, kills one worker with SIGKILL while they run, and shows
the other one finishing every invoice: the killed worker's tasks come back when their
2-second lease runs out. Exit status 0 only if every invoice succeeded.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
sys.path.insert(0, str(EXAMPLES))

import redis_jobs

import offload

LEASE = 2.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(directory: Path, port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
         "--appendonly", "yes", "--save", "", "--maxmemory-policy", "noeviction",
         "--logfile", str(directory / "redis.log")],
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise SystemExit("redis-server did not start")


def start_worker(store: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "offload", "worker", "--store", store, "--import", "redis_jobs",
         "--concurrency", "16", "--lease", str(LEASE)],
        cwd=EXAMPLES,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip


def run_batch(count: int, seconds: float) -> list[int]:
    handles = [redis_jobs.render_invoice.spawn(n, seconds) for n in range(count)]
    return [h.result_sync(120) for h in handles]


def main() -> int:
    if not (shutil.which("redis-server") or os.path.exists("/usr/bin/redis-server")):
        print("redis-server is not installed: `make system-deps` installs it", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="offload-redis-demo-") as tmp:
        directory = Path(tmp)
        port = free_port()
        store = f"redis://127.0.0.1:{port}/0?prefix=invoices"
        server = start_redis(directory, port)
        workers = [start_worker(store, directory / f"worker-{i}.log") for i in (1, 2)]
        try:
            return demo(store, workers, directory)
        finally:
            for w in workers:
                if w.poll() is None:
                    w.send_signal(signal.SIGTERM)
            for w in workers:
                w.wait(30)
            server.terminate()
            server.wait(10)


def demo(store: str, workers: list[subprocess.Popen[bytes]], directory: Path) -> int:
    names = {w.pid: f"worker {i} (pid {w.pid})" for i, w in enumerate(workers, 1)}
    print(f"\nDurable tasks on Redis: {store}")
    print("  two workers: python -m offload worker --store ... --import redis_jobs")
    offload.configure(store=store, durable_concurrency=0)  # this process only produces
    rt = offload.default_runtime()
    try:
        started = time.monotonic()
        pids = run_batch(2000, 0.001)
        took = time.monotonic() - started
        print(f"  2000 invoices spawned here, run by the workers in {took:.1f} s:")
        for pid, count in collections.Counter(pids).most_common():
            print(f"    {names.get(pid, pid)}: {count}")
        shared = len(set(pids)) == 2
        victim, survivor = workers
        handles = [redis_jobs.render_invoice.spawn(n, 0.2) for n in range(200)]
        time.sleep(0.5)  # both are running some
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        print(f"  200 slower invoices; {names[victim.pid]} killed with SIGKILL mid-run")
        started = time.monotonic()
        pids = [h.result_sync(120) for h in handles]
        took = time.monotonic() - started
        counts = collections.Counter(pids)
        for pid, count in counts.most_common():
            when = " (before it was killed)" if pid == victim.pid else ""
            print(f"    {names.get(pid, pid)}: {count}{when}")
        print(
            f"  all 200 succeeded {took:.1f} s after the kill: the killed worker's tasks were"
            f" reclaimed when their {LEASE:.0f} s lease ran out"
        )
        print(f"  python -m offload status --store '{store}'")
        depths = rt.durable.depths()
        print(f"  store: {', '.join(f'{k} {v}' for k, v in depths.by_state.items() if v)}")
        if not shared or survivor.pid not in counts or survivor.poll() is not None:
            print("demo FAILED: the two workers did not share the queue", file=sys.stderr)
            return 1
        return 0
    finally:
        rt.close(10)


if __name__ == "__main__":
    sys.exit(main())
