"""Durable tasks on Redis (issue 14): offload's Redis store against streaQ, SAQ,
taskiq-redis (its stream broker), arq and Celery (Redis broker), in one run, on one
private redis-server (bench/redis_server.py), flushed before every sample.

    python bench/run.py --only redis --out bench/results-redis.json   # JSON + PNG
    python bench/redis_bench.py [--quick] [--rounds R] [--only enqueue,e2e] [--contenders offload,streaQ]

streaQ's published scenario, side by side (sizes in `Sizes`; quick: smaller):

* **enqueue**: 20,000 no-op tasks from one producer process, after 1,000 untimed,
  batched where the peer can (each peer's mode is in the results: `redis_peers.py`);
  offload: `rt.durable.spawn(noop, 0.0)` in a loop in a producer-only runtime, then
  `flush_sync()`, inside the timing.
* **end to end**: 20,000 no-op tasks enqueued first (untimed); then 1 or 4 worker
  processes start (concurrency 32 each; Celery: a prefork child each), wait at a start
  gate once set up; tasks/s = n / (last task's start - gate opened).
* **sleep**: 1,000 tasks of `await asyncio.sleep(1)` (Celery: `time.sleep(1)` on its
  threads pool), 1 worker process with concurrency 40: seconds from the gate to the
  last task's end (ideal 25).
* **latency** (offload): 1 worker process; tasks enqueued by a paced producer at 50% of
  offload's median end-to-end rate with 1 worker process in this run; each task's start
  minus the `time.time()` read just before its `spawn`; p50 and p99 (goal p99 <= 5 ms).

Every sample is a fresh interpreter in a fresh directory under build/redis-bench/: a
peer's `<its venv>/bin/python bench/redis_peers.py sample SPEC`, offload's `python
bench/redis_bench.py sample SPEC`; bounded by SAMPLE_TIMEOUT. A sample that fails or
times out is reported (contender, phase, reason) and left out of the medians; the run
goes on. offload's workers are `python bench/redis_bench.py worker URL CONCURRENCY`:
what `python -m offload worker` does (a runtime on an asyncio loop, the durable worker
started on it), with the start gate between the runtime's start and the store's.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis_peers
from common import Benchmark, make_benchmark, percentile
from redis_peers import OUT_ENV, Contender, records, wait_for_go
from redis_server import RedisServer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCRATCH = ROOT / "build" / "redis-bench"
PEERS_VENV = ROOT / "build" / "venv-redis-peers"
CONTENDERS = ("offload", "streaQ", "SAQ", "taskiq-redis", "arq", "Celery")
PEERS = CONTENDERS[1:]
PHASES = ("enqueue", "e2e", "sleep", "latency")
ROUNDS = 3
SAMPLE_TIMEOUT = 420.0  # s for one sample's process, workers included
LATENCY_WARMUP = 100
#: The paced producer's rate when this run has no end-to-end number for offload.
LATENCY_RATE_FALLBACK = 2_000.0

#: What the last `run` saw: Redis's version, the peers' versions and modes, failures.
META: dict[str, Any] = {}


@dataclass(frozen=True)
class Sizes:
    enqueue: int
    e2e: int
    concurrency: int
    sleep: int
    sleep_concurrency: int
    latency_seconds: float

    @staticmethod
    def of(quick: bool) -> Sizes:
        if quick:
            return Sizes(2_000, 2_000, 32, 200, 40, 2.0)
        return Sizes(20_000, 20_000, 32, 1_000, 40, 5.0)


# --- offload, inside a sample's process -------------------------------------------------------
class Offload(Contender):
    name = "offload"
    dists = ("offload",)
    mode = "rt.durable.spawn in a loop, then flush_sync() (the store thread pipelines the batch)"

    def __init__(self, url: str) -> None:
        self.url = url

    def runtime(self) -> Any:
        import offload

        rt = offload.Runtime(store=self.url, durable_concurrency=0)
        rt.durable.start()  # connects now, as the peers' producers do before the timing
        return rt

    def produce(self, batches: Sequence[tuple[str, Sequence[float]]]) -> list[float]:
        rt = self.runtime()
        out = []
        try:
            for kind, t0s in batches:
                task = redis_peers.anoop if kind == "noop" else redis_peers.asleep1
                spawn = functools.partial(rt.durable.spawn, task)
                start = time.perf_counter()
                for t0 in t0s:
                    spawn(t0)
                rt.durable.flush_sync()
                out.append(time.perf_counter() - start)
        finally:
            rt.close(60)
        return out

    def worker_commands(self, processes: int, concurrency: int, kind: str) -> list[list[str]]:
        return [[sys.executable, __file__, "worker", self.url, str(concurrency)]] * processes


def latency_sample(url: str, where: Path, rate: float, n: int, concurrency: int) -> dict[str, Any]:
    """One offload worker; `n` no-op tasks spawned at `rate`/s, each with t0 =
    `time.time()` read just before its spawn."""
    contender = Offload(url)
    out = Path(os.environ[OUT_ENV])
    workers = redis_peers.Workers(contender.worker_commands(1, concurrency, "noop"), where, 1)
    rt = contender.runtime()
    try:
        workers.go()
        spawn = functools.partial(rt.durable.spawn, redis_peers.anoop)
        for _ in range(LATENCY_WARMUP):
            spawn(time.time())
        workers.wait_done(out, LATENCY_WARMUP, timeout=60)
        start = time.monotonic()
        sent = 0
        while sent < n:
            due = min(n, int((time.monotonic() - start) * rate) + 1)
            while sent < due:
                spawn(time.time())
                sent += 1
            time.sleep(0.0002)
        achieved = n / (time.monotonic() - start)
        workers.wait_done(out, LATENCY_WARMUP + n, timeout=60 + n / 100)
    finally:
        rt.close(60)
        workers.stop()
    timed = sorted(records(out)[LATENCY_WARMUP:])
    waits = [(at - t0) * 1e3 for t0, at in timed]
    # The p99 of each second of the paced phase: a steady climb says the worker fell
    # behind the rate; isolated spikes say stalls.
    first, by_second = timed[0][0], {}
    for (t0, _), wait in zip(timed, waits, strict=True):
        by_second.setdefault(int(t0 - first), []).append(wait)
    return {
        "p50": percentile(waits, 50),
        "p99": percentile(waits, 99),
        "max": max(waits),
        "rate": achieved,
        "p99_each_second": [round(percentile(w, 99), 2) for _, w in sorted(by_second.items())],
    }


def sample_main(spec: dict[str, Any]) -> dict[str, Any]:
    if spec["phase"] == "latency":
        where = Path(spec["where"])
        os.environ[OUT_ENV] = str(where / "records")
        return latency_sample(spec["url"], where, spec["rate"], spec["n"], spec["concurrency"])
    return redis_peers.run_sample(Offload(spec["url"]), spec)


def worker_main(url: str, concurrency: int) -> int:
    """An offload worker process: `python -m offload worker`'s steps, with the gate."""
    import offload
    from offload.durable._cli import settle_heap

    offload.configure(store=url, durable_concurrency=concurrency)

    async def work() -> None:
        runtime = offload.default_runtime()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        runtime.start(loop)
        wait_for_go()
        runtime.durable.start()
        settle_heap()  # (as the command does)
        await stop.wait()
        await runtime.shutdown(10)

    asyncio.run(work())
    return 0


# --- in the parent ------------------------------------------------------------------------------
class Run:
    """One benchmark run: the server, the samples, their failures."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.failures: list[dict[str, str]] = []

    def sample(self, phase: str, contender: str, **spec: Any) -> dict[str, Any] | None:
        """One sample in a fresh interpreter and directory; None if it failed (said)."""
        command = self._command(contender)
        if isinstance(command, str):
            return self._failed(phase, contender, command)
        self.server.flush()
        SCRATCH.mkdir(parents=True, exist_ok=True)
        where = Path(tempfile.mkdtemp(prefix=f"{phase}-{contender}-", dir=SCRATCH))
        spec |= {"phase": phase, "contender": contender, "where": str(where)}
        spec["url"] = self.server.url
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
        }
        try:
            done = subprocess.run(
                [*command, "sample", json.dumps(spec)],
                check=False,
                env=env,
                cwd=HERE,
                capture_output=True,
                text=True,
                timeout=SAMPLE_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            return self._failed(phase, contender, f"timeout {SAMPLE_TIMEOUT:g} s")
        finally:
            _kill_leftovers(where)
            shutil.rmtree(where, ignore_errors=True)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines() or ["(no stderr)"]
            return self._failed(phase, contender, f"exit {done.returncode}: {lines[-1][:300]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    def _command(self, contender: str) -> list[str] | str:
        """How to run a sample of this contender, or why it can't run."""
        if contender == "offload":
            return [sys.executable, __file__]
        python = PEERS_VENV / redis_peers.VENV[contender] / "bin" / "python"
        if not python.exists():
            return f"{python} missing (make bench-redis-peers)"
        return [str(python), str(HERE / "redis_peers.py")]

    def _failed(self, phase: str, contender: str, reason: str) -> None:
        self.failures.append({"phase": phase, "contender": contender, "reason": reason})
        print(f"  FAILED {phase} {contender}: {reason}", file=sys.stderr, flush=True)


def _kill_leftovers(where: Path) -> None:
    """Worker process groups a killed sample left behind (redis_peers.Workers writes
    each group's id in `pgids` as it starts them)."""
    try:
        pgids = (where / "pgids").read_text().split()
    except OSError:
        return
    for pgid in pgids:
        try:
            os.killpg(int(pgid), signal.SIGKILL)
        except (ProcessLookupError, ValueError, PermissionError):
            pass


def _interleave(
    cases: Sequence[tuple[str, Callable[[], dict[str, Any] | None]]], rounds: int
) -> dict[str, list[dict[str, Any]]]:
    """Each round runs every case once, rotated by one per round; failed samples left out."""
    got: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in cases}
    for r in range(rounds):
        shift = r % len(cases)
        for name, sample in [*cases[shift:], *cases[:shift]]:
            result = sample()
            if result is not None:
                got[name].append(result)
    return got


def _benchmark(
    key: str,
    title: str,
    unit: str,
    got: dict[str, list[dict[str, Any]]],
    field: str,
    *,
    higher_is_better: bool = True,
    note: str = "",
) -> Benchmark | None:
    samples = {name: [s[field] for s in runs] for name, runs in got.items() if runs}
    failed = [name for name, runs in got.items() if not runs]
    if failed:
        note = "; ".join(filter(None, [note, f"failed every sample: {', '.join(failed)}"]))
    if not samples:
        print(f"\n== {title}: no contender finished a sample", flush=True)
        return None
    pairs = (
        [("offload", p) if higher_is_better else (p, "offload") for p in samples if p != "offload"]
        if "offload" in samples
        else []
    )
    return make_benchmark(
        key, title, unit, samples, pairs=pairs, higher_is_better=higher_is_better, note=note
    )


def _extra_runs(got: dict[str, list[dict[str, Any]]], n: int) -> str:
    extra = {name: sum(s["runs"] for s in runs) - n * len(runs) for name, runs in got.items()}
    return "runs beyond n: " + ", ".join(f"{k} {v}" for k, v in extra.items())


def run(
    rounds: int,
    quick: bool,
    phases: Sequence[str] = PHASES,
    contenders: Sequence[str] = CONTENDERS,
    latency_rate: float | None = None,
) -> list[Benchmark]:
    """The phases' benchmarks. The latency phase's rate: `latency_rate` if given, else
    50% of offload's median end to end with one worker process in this run, else
    LATENCY_RATE_FALLBACK."""
    sizes = Sizes.of(quick)
    out: list[Benchmark | None] = []
    SCRATCH.mkdir(parents=True, exist_ok=True)
    with RedisServer(SCRATCH) as server:
        this = Run(server)
        print(f"redis-server {server.version} at {server.url}", flush=True)

        def cases(phase: str, **spec: Any) -> list[tuple[str, Callable[[], dict[str, Any] | None]]]:
            return [(c, functools.partial(this.sample, phase, c, **spec)) for c in contenders]

        if "enqueue" in phases:
            got = _interleave(
                cases("enqueue", n=sizes.enqueue, concurrency=sizes.concurrency), rounds
            )
            out.append(
                _benchmark(
                    "redis_enqueue",
                    f"Redis: enqueue {sizes.enqueue:,} no-op tasks, batched where the peer can",
                    "tasks/s",
                    got,
                    "rate",
                )
            )
        e2e_one: Benchmark | None = None
        if "e2e" in phases:
            for processes in (1, 4):
                got = _interleave(
                    cases("e2e", n=sizes.e2e, processes=processes, concurrency=sizes.concurrency),
                    rounds,
                )
                noun = "process" if processes == 1 else "processes"
                bench = _benchmark(
                    f"redis_e2e_{processes}",
                    f"Redis: end to end, {sizes.e2e:,} queued no-op tasks, {processes} worker {noun}",
                    "tasks/s",
                    got,
                    "rate",
                    note="n / (last start - gate opened); " + _extra_runs(got, sizes.e2e),
                )
                out.append(bench)
                if processes == 1:
                    e2e_one = bench
        if "sleep" in phases:
            got = _interleave(
                cases("sleep", n=sizes.sleep, concurrency=sizes.sleep_concurrency), rounds
            )
            ideal = sizes.sleep / sizes.sleep_concurrency
            out.append(
                _benchmark(
                    "redis_sleep",
                    f"Redis: {sizes.sleep:,} tasks of sleep(1), concurrency"
                    f" {sizes.sleep_concurrency}, 1 worker process (ideal {ideal:g} s)",
                    "s",
                    got,
                    "seconds",
                    higher_is_better=False,
                    note="gate opened to the last task's end; " + _extra_runs(got, sizes.sleep),
                )
            )
        if "latency" in phases and "offload" in contenders:
            if latency_rate is not None:
                pass
            elif e2e_one is not None and "offload" in e2e_one.samples:
                latency_rate = 0.5 * e2e_one.median("offload")
            else:
                latency_rate = LATENCY_RATE_FALLBACK
            n = int(latency_rate * sizes.latency_seconds)
            got = _interleave(
                [
                    (
                        "offload",
                        functools.partial(
                            this.sample,
                            "latency",
                            "offload",
                            rate=latency_rate,
                            n=n,
                            concurrency=sizes.concurrency,
                        ),
                    )
                ],
                rounds,
            )
            for q in ("p50", "p99"):
                out.append(
                    _benchmark(
                        f"redis_latency_{q}",
                        f"Redis: enqueue-to-start {q}, {n:,} tasks at {latency_rate:,.0f}/s"
                        + (" (50% of offload's end to end, 1 worker process)" if e2e_one else ""),
                        "ms",
                        got,
                        q,
                        higher_is_better=False,
                        note="achieved rates: "
                        + ", ".join(f"{s['rate']:,.0f}/s" for s in got["offload"])
                        + "; p99 of each second, ms: "
                        + "; ".join(str(s.get("p99_each_second")) for s in got["offload"]),
                    )
                )
        META.clear()
        META.update(
            {
                "redis_server": server.version,
                "versions": _versions(contenders),
                "modes": _modes(contenders),
                "concurrency": sizes.concurrency,
                "latency_rate": latency_rate,
                "failures": this.failures,
            }
        )
    print(f"\nversions {META['versions']}\nfailures {this.failures}", flush=True)
    return [b for b in out if b is not None]


def _modes(contenders: Sequence[str]) -> dict[str, str]:
    classes: dict[str, type[Contender]] = {**redis_peers.PEERS, "offload": Offload}
    return {c: classes[c].mode for c in contenders}


def _versions(contenders: Sequence[str]) -> dict[str, dict[str, str | None]]:
    """Each contender's packages: a peer's read in its own virtualenv, offload's here."""
    import importlib.metadata

    out: dict[str, dict[str, str | None]] = {}
    if "offload" in contenders:
        out["offload"] = {"offload": importlib.metadata.version("offload")}
    for venv in sorted({redis_peers.VENV[c] for c in contenders if c != "offload"}):
        names = [c for c in contenders if c != "offload" and redis_peers.VENV[c] == venv]
        python = PEERS_VENV / venv / "bin" / "python"
        try:
            done = subprocess.run(
                [str(python), str(HERE / "redis_peers.py"), "versions", *names],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            out |= json.loads(done.stdout)
        except (OSError, subprocess.SubprocessError, json.JSONDecodeError):
            out |= {name: {} for name in names}
    return out


def main() -> int:
    if sys.argv[1:2] == ["sample"]:
        print(json.dumps(sample_main(json.loads(sys.argv[2]))))
        return 0
    if sys.argv[1:2] == ["worker"]:
        return worker_main(sys.argv[2], int(sys.argv[3]))
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10x smaller sizes")
    parser.add_argument("--rounds", type=int, help=f"rounds (default {ROUNDS}; quick 1)")
    parser.add_argument("--only", help=f"phases out of {','.join(PHASES)}; default all")
    parser.add_argument("--contenders", help=f"out of {','.join(CONTENDERS)}; default all")
    parser.add_argument(
        "--latency-rate", type=float, help="the latency phase's tasks/s (default: 50%% of e2e)"
    )
    args = parser.parse_args()
    phases = tuple(args.only.split(",")) if args.only else PHASES
    contenders = tuple(args.contenders.split(",")) if args.contenders else CONTENDERS
    started = time.monotonic()
    rounds = args.rounds or (1 if args.quick else ROUNDS)
    run(rounds, args.quick, phases, contenders, args.latency_rate)
    print(f"\n{time.monotonic() - started:.0f} s (printed only: bench/run.py --only redis writes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
