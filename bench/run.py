"""Run every benchmark in one invocation; print the targets; write results JSON + chart.

    python bench/run.py            # full run (~10 min): bench/results.json, bench/results.png
    python bench/run.py --quick    # ~1 min subset: bench/out/results-quick.{json,png}
    python bench/run.py --only lanes,e2e --out bench/out/x.json

Groups: lanes (bench/lanes.py), e2e (bench/e2e.py), memory (bench/memory.py),
scaling (bench/scaling.py), scheduled and lateness (bench/timers.py), compare
(bench/before_after.py: the spawn benchmarks on the engine of --before and on this
tree's), durable (bench/durable.py: the durable tier against Huey and litequeue),
redis (bench/redis_bench.py: durable tasks on Redis against streaQ, SAQ, taskiq-redis,
arq and Celery). See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import before_after
import chart
import durable
import e2e
import lanes
import memory
import redis_bench
import scaling
import timers
from common import Benchmark

HERE = Path(__file__).resolve().parent
GROUPS = (
    "lanes",
    "e2e",
    "memory",
    "scaling",
    "scheduled",
    "lateness",
    "compare",
    "durable",
    "redis",
)
#: The engine before task controls (issue 12): `compare` measures against it by default.
BEFORE = "a4ebdaa"


@dataclass(frozen=True)
class Target:
    label: str
    bench: str
    num: str
    den: str
    minimum: float | None  # None: shown for reference, no verdict
    #: Judge the median of the per-round ratios instead of the ratio of medians.
    paired: bool = False

    def check(self, results: dict[str, Benchmark]) -> dict[str, Any] | None:
        if self.bench not in results or not {self.num, self.den} <= set(
            results[self.bench].samples
        ):
            return None
        bench = results[self.bench]
        ratio = bench.paired_ratio if self.paired else bench.ratio
        value = ratio(self.num, self.den)
        verdict = "info" if self.minimum is None else "PASS" if value >= self.minimum else "MISS"
        return {
            "target": self.label,
            "benchmark": self.bench,
            "ratio": value,
            "minimum": self.minimum,
            "verdict": verdict,
        }


@dataclass(frozen=True)
class Ceiling:
    """A contender's median must stay at or under `maximum` (None: shown, no verdict)."""

    label: str
    bench: str
    contender: str
    maximum: float | None

    def check(self, results: dict[str, Benchmark]) -> dict[str, Any] | None:
        if self.bench not in results:
            return None
        bench = results[self.bench]
        if self.contender not in bench.samples:
            return None
        value = bench.median(self.contender)
        verdict = "info" if self.maximum is None else "PASS" if value <= self.maximum else "MISS"
        return {
            "target": self.label,
            "benchmark": self.bench,
            "value": value,
            "unit": bench.unit,
            "maximum": self.maximum,
            "verdict": verdict,
        }


@dataclass(frozen=True)
class Floor:
    """A contender's median must stay at or above `minimum`."""

    label: str
    bench: str
    contender: str
    minimum: float

    def check(self, results: dict[str, Benchmark]) -> dict[str, Any] | None:
        if self.bench not in results or self.contender not in results[self.bench].samples:
            return None
        bench = results[self.bench]
        value = bench.median(self.contender)
        return {
            "target": self.label,
            "benchmark": self.bench,
            "value": value,
            "unit": bench.unit,
            "minimum": self.minimum,
            "verdict": "PASS" if value >= self.minimum else "MISS",
        }


@dataclass(frozen=True)
class VsBest:
    """A contender's median over the best other contender's (the ratio of medians):
    must reach `minimum`. Says which contender was the best."""

    label: str
    bench: str
    contender: str
    minimum: float

    def check(self, results: dict[str, Benchmark]) -> dict[str, Any] | None:
        bench = results.get(self.bench)
        if bench is None or self.contender not in bench.samples or len(bench.samples) < 2:
            return None
        others = [name for name in bench.samples if name != self.contender]
        best = (
            max(others, key=bench.median)
            if bench.higher_is_better
            else min(others, key=bench.median)
        )
        value = bench.ratio(self.contender, best)
        if not bench.higher_is_better:
            value = 1 / value
        return {
            "target": f"{self.label} ({best})",
            "benchmark": self.bench,
            "ratio": value,
            "minimum": self.minimum,
            "verdict": "PASS" if value >= self.minimum else "MISS",
        }


#: Issue 14: offload's Redis store against the Redis peers, same run, same server.
REDIS_TARGETS: list[Target | Ceiling | VsBest] = [
    Target("redis: enqueue >= 2x streaQ", "redis_enqueue", "offload", "streaQ", 2),
    VsBest(
        "redis: end to end, 1 worker process >= 1.5x the best peer", "redis_e2e_1", "offload", 1.5
    ),
    VsBest(
        "redis: end to end, 4 worker processes >= 1.5x the best peer", "redis_e2e_4", "offload", 1.5
    ),
    Ceiling(
        "redis: enqueue-to-start p99 <= 5 ms at 50% of offload's end-to-end rate",
        "redis_latency_p99",
        "offload",
        5.0,
    ),
    Ceiling(
        "redis: 1,000 x sleep(1), concurrency 40: offload's seconds (ideal 25)",
        "redis_sleep",
        "offload",
        None,
    ),
]


def _durable_targets(durability: str) -> list[Target | Ceiling | Floor]:
    """Issue 13: offload's SQLite store against Huey's (`SqliteHuey`), same run.
    Latency rows are Huey / offload (> 1: offload starts tasks sooner), no verdict."""
    me, huey = f"offload, {durability}", f"Huey, {durability}"
    return [
        Floor(f"durable ({durability}): enqueue >= 100,000 tasks/s", "durable_enqueue", me, 1e5),
        Target(f"durable ({durability}): enqueue >= 10x Huey", "durable_enqueue", me, huey, 10),
        *(
            Target(
                f"durable ({durability}): end to end, {n} worker process{'es' * (n > 1)}"
                " >= 5x Huey",
                f"durable_e2e_{n}",
                me,
                huey,
                5,
            )
            for n in (1, 3)
        ),
        *(
            Target(
                f"durable ({durability}): enqueue-to-start {q}, Huey / offload",
                f"durable_latency_{q}",
                huey,
                me,
                None,
            )
            for q in ("p50", "p99")
        ),
    ]


def _compare_targets(results: dict[str, Benchmark]) -> list[Target]:
    """Spawn speed with no controls set, unchanged within noise: the median of the
    per-round after / before ratios (each round runs the two back to back) >= 0.95."""
    return [
        Target(
            f"no controls, {key.removeprefix('compare_')}: after / before >= 0.95 (paired)",
            key,
            *b.ratio_pairs[0],
            0.95,
            paired=True,
        )
        for key, b in results.items()
        if key.startswith("compare_")
    ]


TARGETS: list[Target | Ceiling | Floor | VsBest] = [
    Target(
        "thread run >= 10x asyncio.to_thread",
        "thread_run",
        "offload await threads.run",
        "asyncio.to_thread",
        10,
    ),
    Target(
        "background submit >= 10x run_coroutine_threadsafe",
        "background_spawn",
        "offload background.spawn",
        "run_coroutine_threadsafe",
        10,
    ),
    Target(
        "loop spawn >= 1.2x create_task + refs",
        "loop_spawn",
        "offload loop.spawn",
        "create_task + refs + callback",
        1.2,
    ),
    Target(
        "e2e 1 ms blocking task: offload.spawn rps >= 0.8x plain",
        "e2e_blocking_rps",
        "blocking: offload.spawn",
        "plain",
        0.8,
    ),
    Target(
        "e2e 1 ms blocking task: offload BackgroundTasks rps >= 0.8x plain",
        "e2e_blocking_rps",
        "blocking: offload BackgroundTasks",
        "plain",
        0.8,
    ),
    Target(
        "e2e 1 ms blocking task: FastAPI BackgroundTasks rps (about 0.3x)",
        "e2e_blocking_rps",
        "blocking: FastAPI BackgroundTasks",
        "plain",
        None,
    ),
    Ceiling(
        "scheduled tasks (100k; quick: 20k), shared view: <= 200 B each beyond pending (tracemalloc)",
        "scheduled_memory_tracemalloc",
        "shared view, beyond pending",
        200,
    ),
    Ceiling(
        "scheduled tasks (100k; quick: 20k), shared view: <= 200 B each beyond pending (RSS)",
        "scheduled_memory_rss",
        "shared view, beyond pending",
        200,
    ),
    Ceiling(
        "scheduled tasks (100k; quick: 20k), options() per call: B each beyond pending (tracemalloc)",
        "scheduled_memory_tracemalloc",
        "options per call, beyond pending",
        None,
    ),
    *(
        Ceiling(
            f"timer lateness p99 <= 2 ms: {lane} lane, {loop}",
            "timer_lateness_p99",
            f"offload {lane} lane, {loop}",
            2.0,
        )
        for loop in ("idle loop", "idle uvloop", "busy loop", "busy uvloop")
        for lane in ("threads", "loop")
    ),
    *_durable_targets("normal"),
    *_durable_targets("full"),
    *REDIS_TARGETS,
]


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break

    def command(*args: str) -> str:
        try:
            done = subprocess.run(args, check=False, cwd=HERE, capture_output=True, text=True)
        except OSError:
            return ""
        return (done.stdout + done.stderr).strip()

    commit = command("git", "rev-parse", "--short", "HEAD")
    if command("git", "status", "--porcelain", "--", "../csrc", "../src"):
        commit += "+uncommitted engine changes"
    versions: dict[str, str | None] = {}
    for name in (
        "offload",
        "fastapi",
        "starlette",
        "uvicorn",
        "uvloop",
        "anyio",
        "aiojobs",
        "asyncer",
        "greenletio",
        "matplotlib",
        "msgspec",
        "huey",
        "litequeue",
        "redis",
        "hiredis",
    ):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu": model,
        "cpus": os.cpu_count(),
        "git_commit": commit,
        "wrk": command("wrk", "--version").split(" Copyright")[0],
        "packages": versions,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the ~1 minute subset")
    parser.add_argument("--rounds", type=int, help="rounds per comparison (default 5; quick 3)")
    parser.add_argument("--only", help=f"comma-separated groups out of {','.join(GROUPS)}")
    parser.add_argument("--out", type=Path, help="results JSON path (the chart goes beside it)")
    parser.add_argument(
        "--before", default=BEFORE, help=f"compare: the older engine (default {BEFORE})"
    )
    args = parser.parse_args()
    quick = args.quick
    rounds = args.rounds or (3 if quick else 5)
    groups = args.only.split(",") if args.only else list(GROUPS)
    unknown = set(groups) - set(GROUPS)
    if unknown:
        parser.error(f"unknown group(s): {', '.join(sorted(unknown))}")
    out = args.out or (HERE / "out" / "results-quick.json" if quick else HERE / "results.json")

    info = machine()
    group_rounds = dict.fromkeys(groups, rounds)
    if "durable" in group_rounds:  # whole processes per sample (~3 min in all): fewer rounds
        group_rounds["durable"] = args.rounds or (1 if quick else durable.ROUNDS)
    if "redis" in group_rounds:  # the same, with worker processes of six contenders
        group_rounds["redis"] = args.rounds or (1 if quick else redis_bench.ROUNDS)
    print(
        f"python {info['python']} on {info['cpu']} x{info['cpus']}; "
        f"{'quick' if quick else 'full'} run, rounds {group_rounds}; load {os.getloadavg()}"
    )
    started = time.monotonic()
    started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    load_before = os.getloadavg()
    benches: list[Benchmark] = []
    group_seconds: dict[str, float] = {}
    for group in groups:
        t0 = time.monotonic()
        if group == "lanes":
            benches += lanes.run(rounds, 0.25 if quick else 1.0)
        elif group == "e2e":
            benches += e2e.run(2, 2, works=("blocking",)) if quick else e2e.run(rounds, 5)
        elif group == "memory":
            benches += memory.run(1 if quick else 3, 100_000)
        elif group == "scaling":
            benches += scaling.run(2 if quick else rounds, 0.25 if quick else 1.0)
        elif group == "scheduled":
            benches += timers.memory(1 if quick else 3, 20_000 if quick else 100_000)
        elif group == "lateness":
            benches += timers.firing(
                2 if quick else rounds, 500 if quick else 2000, 0.5 if quick else 2.0
            )
        elif group == "compare":
            # Samples are short and the two builds' spread is what matters: more rounds.
            benches += before_after.run(2 * rounds + 1, 0.25 if quick else 1.0, args.before)
        elif group == "durable":
            benches += durable.run(group_rounds[group], quick)
        elif group == "redis":
            benches += redis_bench.run(group_rounds[group], quick)
        group_seconds[group] = round(time.monotonic() - t0, 1)
    elapsed = time.monotonic() - started

    results = {b.key: b for b in benches}
    targets = [*TARGETS, *_compare_targets(results)]
    checks = [c for c in (t.check(results) for t in targets) if c is not None]
    print("\n== targets (medians or ratios of medians, same run)")
    for c in checks:
        if "ratio" in c:
            value, bound = (
                f"{c['ratio']:.2f}x",
                "" if c["minimum"] is None else f">= {c['minimum']}x",
            )
        else:
            value = f"{c['value']:.3g} {c['unit']}"
            if c.get("maximum") is not None:
                bound = f"<= {c['maximum']:g}"
            elif c.get("minimum") is not None:
                bound = f">= {c['minimum']:g}"
            else:
                bound = ""
        print(f"  {c['target']:<80}{value:>16}  {bound:<8} {c['verdict']}")
    print(
        f"\n{elapsed:.0f} s {group_seconds}; load average before {load_before}, after {os.getloadavg()}"
    )

    document = {
        "meta": {
            **info,
            "date": started_at,
            "mode": "quick" if quick else "full",
            # The chart's title says this: one number when every group ran as many.
            "rounds": rounds if len(set(group_rounds.values())) > 1 else group_rounds[groups[0]],
            "group_rounds": group_rounds,
            "seconds": round(elapsed, 1),
            "group_seconds": group_seconds,
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            # The redis group: the server's version, the peers' versions and enqueue
            # modes, the paced rate of the latency phase, failed samples.
            **({"redis": dict(redis_bench.META)} if "redis" in groups else {}),
        },
        "targets": checks,
        "benchmarks": {b.key: b.to_json() for b in benches},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")
    png = out.with_suffix(".png")
    chart.draw(document, png)
    print(f"wrote {out} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
