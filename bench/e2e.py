"""End to end: one FastAPI endpoint under uvicorn (uvloop, one worker), driven by wrk.

The app (bench/e2e_app.py) serves the endpoint plain and with one background call per
request: FastAPI's BackgroundTasks, offload.fastapi.BackgroundTasks (request-scoped, and
detached), offload.spawn;
the call is an async no-op or a blocking time.sleep(0.001). One server serves every
variant; each sample is `wrk -t1 -c32 -d{seconds}s --latency` on one URL, after a
GET /drain that waits until the previous run's background work is done. Requests/s
and p50/p99 latency are reported as ratios to the plain endpoint.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from common import Benchmark, interleave, make_benchmark

HERE = Path(__file__).resolve().parent
CONNECTIONS = 32
PLAIN = "plain"
VARIANTS = {
    "FastAPI BackgroundTasks": "fastapi",
    "offload BackgroundTasks": "offload-background",
    "offload BackgroundTasks, detached": "offload-detached",
    "offload.spawn": "offload-spawn",
}
WORK = {"async": "async no-op call", "blocking": "blocking 1 ms call"}
#: metric: (title, unit, higher is better)
METRICS = {
    "rps": ("throughput", "requests/s", True),
    "p50": ("p50 latency", "ms", False),
    "p99": ("p99 latency", "ms", False),
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, timeout: float = 60) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return bytes(response.read())


@contextlib.contextmanager
def server() -> Iterator[str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "uvicorn", "e2e_app:app", "--app-dir", str(HERE)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop", "--http", "httptools"]
    cmd += ["--no-access-log", "--log-level", "warning"]
    proc = subprocess.Popen(cmd)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _get(base + "/plain", timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the benchmark server did not start") from None
                time.sleep(0.1)
        yield base
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, seconds: float) -> dict[str, float]:
    cmd = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", url]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    if errors:
        print(f"  wrk {url}: {errors.group(0)}", file=sys.stderr)

    def latency(q: str) -> float:
        m = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        assert m, out
        return float(m.group(1)) * _UNIT[m.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert rps, out
    return {"rps": float(rps.group(1)), "p50": latency("50"), "p99": latency("99")}


def run(rounds: int, seconds: float, works: tuple[str, ...] = tuple(WORK)) -> list[Benchmark]:
    if shutil.which("wrk") is None:
        print("\n== end to end: SKIPPED, wrk is not installed (bash tools/system-deps.sh wrk)")
        return []
    paths = {PLAIN: "/plain"}
    for work in works:
        for name, variant in VARIANTS.items():
            paths[f"{work}: {name}"] = f"/{work}/{variant}"
    with server() as base:

        def sample(path: str) -> Callable[[], dict[str, float]]:
            def measure() -> dict[str, float]:
                _get(base + "/drain")
                return wrk(base + path, seconds)

            return measure

        for path in paths.values():  # warm-up: imports, thread pools, caches
            wrk(base + path, 1)
        samples = interleave([(name, sample(path)) for name, path in paths.items()], rounds)
    out = []
    for work in works:
        names = [PLAIN, *(f"{work}: {name}" for name in VARIANTS)]
        for metric, (title, unit, higher) in METRICS.items():
            out.append(
                make_benchmark(
                    f"e2e_{work}_{metric}",
                    f"end to end, {WORK[work]}: {title}",
                    unit,
                    {name: [s[metric] for s in samples[name]] for name in names},
                    baseline=PLAIN,
                    higher_is_better=higher,
                    note=f"wrk -t1 -c{CONNECTIONS} -d{seconds}s, uvicorn --loop uvloop",
                )
            )
    return out
