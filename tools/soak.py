"""Soak: N tasks (default 1,000,000) across the loop, background and threads lanes from
8 long-lived producer threads, in waves, with every admission policy at work.

  threads     max_pending 2,000, on_full="block"  (producers wait for room)
  background  max_running 64, max_pending 256, on_full="drop"  (bursts beyond end cancelled)
  loop        max_running 64, max_pending 256, on_full="reject" (producers get offload.Full)

About 1% of tasks fail, and about 1% of thread-lane tasks are cancelled right after the
spawn. Every attempt is counted on the producer side and checked against the engine's
stats, lane by lane: submitted = succeeded + failed + cancelled + dropped + rejected, and
each of those equals what the producers saw; every failure reached error_handler once;
every drop was logged once (offload's WARNING "dropped: lane ... is full"), and nothing
else was logged at WARNING or above. RSS is sampled after each wave (drained, gc'd);
after the load it must be within 5% of its plateau (no growth per task).

Usage: python tools/soak.py [--tasks N] [--producers 8] [--waves 10]
(`make soak` runs 1,000,000; tests/reliability/test_soak.py a CI-sized one.)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import resource
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import offload

LANES = ("threads", "background", "loop")
COUNTERS = ("succeeded", "failed", "cancelled", "dropped", "rejected")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def sync_work(n: int) -> int:
    if n % 97 == 0:
        raise ValueError(n)
    return n


async def async_work(n: int) -> int:
    if n % 89 == 0:
        raise ValueError(n)
    if n % 16 == 0:
        await asyncio.sleep(0)  # some actually suspend
    return n


@dataclass
class Result:
    tasks: int
    seconds: float
    stats: dict[str, dict[str, Any]]
    seen: dict[str, Counter[str]]
    reported: Counter[str]
    rss: list[float]
    drop_logs: Counter[str] = field(default_factory=Counter)
    other_logs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class _Tally(logging.Handler):
    """Counts offload's log records: drops by lane, anything else at WARNING+ kept."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.drops: Counter[str] = Counter()
        self.others: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        if "dropped: lane %s is full" in str(record.msg) and len(args) == 2:
            self.drops[str(args[1])] += 1
        else:
            self.others.append(record.getMessage())


def run(
    tasks: int = 1_000_000, producers: int = 8, waves: int = 10, check_rss: bool = True
) -> Result:
    per_wave = max(1, tasks // (producers * waves))
    total = per_wave * producers * waves
    lock = threading.Lock()
    reported: Counter[str] = Counter()
    seen = {lane: Counter[str]() for lane in LANES}
    rss: list[float] = []

    def on_error(task: offload.Task[Any], exc: BaseException) -> None:
        with lock:
            reported[task.lane] += 1

    async def home() -> dict[str, dict[str, Any]]:
        async with offload.Runtime(
            background_loops=2,
            error_handler=on_error,
            lanes={
                "threads": {"max_pending": 2_000, "on_full": "block"},
                "background": {"max_running": 64, "max_pending": 256, "on_full": "drop"},
                "loop": {"max_running": 64, "max_pending": 256, "on_full": "reject"},
            },
        ) as rt:
            # Long-lived producer threads, as in a server: one barrier per wave.
            start_wave = threading.Barrier(producers + 1)
            end_wave = threading.Barrier(producers + 1)
            spawners = {
                "threads": (rt.threads.spawn, sync_work),
                "background": (rt.background.spawn, async_work),
                "loop": (rt.loop.spawn, async_work),  # from a thread: the home loop
            }

            def producer(seed: int) -> None:
                mine = {lane: Counter[str]() for lane in LANES}
                for wave in range(waves):
                    start_wave.wait()
                    for i in range(per_wave):
                        n = (wave * producers + seed) * per_wave + i
                        lane = LANES[n % 3]
                        spawn, work = spawners[lane]
                        counts = mine[lane]
                        counts["attempts"] += 1
                        try:
                            task = spawn(work, n)
                        except offload.Full:
                            counts["full"] += 1
                            continue
                        if task.state == "cancelled" and task.run_time is None:
                            counts["dropped"] += 1
                        elif lane == "threads" and n % 101 == 0 and task.cancel():
                            counts["cancelled"] += 1
                    end_wave.wait()
                with lock:
                    for lane in LANES:
                        seen[lane].update(mine[lane])

            threads = [threading.Thread(target=producer, args=(p,)) for p in range(producers)]
            for t in threads:
                t.start()
            for wave in range(waves):
                await asyncio.to_thread(start_wave.wait)
                await asyncio.to_thread(end_wave.wait)
                left = await rt.drain(300)
                assert not left, f"{len(left)} task(s) left after a drain"
                gc.collect()
                rss.append(rss_mb())
                print(f"wave {wave + 1}/{waves}: rss {rss[-1]:.1f} MB", flush=True)
            for t in threads:
                t.join()
            return rt.stats()

    # One WARNING per dropped task: counted (and checked), not printed.
    tally = _Tally()
    offload_logger = logging.getLogger("offload")
    propagate = offload_logger.propagate
    offload_logger.addHandler(tally)
    offload_logger.propagate = False
    try:
        start = time.monotonic()
        stats = asyncio.run(home())
        seconds = time.monotonic() - start
    finally:
        offload_logger.removeHandler(tally)
        offload_logger.propagate = propagate
    result = Result(total, seconds, stats, seen, reported, rss, tally.drops, tally.others)
    check(result, check_rss)
    return result


def check(r: Result, check_rss: bool) -> None:
    p = r.problems
    submitted = sum(r.stats[lane]["submitted"] for lane in LANES)
    if submitted != r.tasks:
        p.append(f"submitted {submitted} != {r.tasks} tasks spawned")
    for lane in LANES:
        s, seen = r.stats[lane], r.seen[lane]
        if s["submitted"] != sum(s[k] for k in COUNTERS):
            p.append(
                f"{lane}: submitted != succeeded + failed + cancelled + dropped + rejected: {s}"
            )
        want = {
            "submitted": seen["attempts"],
            "rejected": seen["full"],
            "dropped": seen["dropped"],
            "cancelled": seen["cancelled"],
            "failed": r.reported[lane],
            "pending": 0,
            "running": 0,
        }
        for key, value in want.items():
            if s[key] != value:
                p.append(f"{lane}: {key} is {s[key]}, producers/handler saw {value}")
        if r.drop_logs[lane] != s["dropped"]:
            p.append(f"{lane}: {s['dropped']} dropped but {r.drop_logs[lane]} drop warnings")
    if r.other_logs:
        p.append(f"{len(r.other_logs)} unexpected offload log record(s): {r.other_logs[:3]}")
    if check_rss and len(r.rss) >= 4:
        plateau = max(r.rss[1 : len(r.rss) // 2 + 1])
        final = r.rss[-1]
        if final > plateau * 1.05:
            p.append(f"RSS grew: plateau {plateau:.1f} MB, final {final:.1f} MB")


def report(r: Result) -> str:
    lines = [f"{r.tasks:,} tasks in {r.seconds:.1f} s ({r.tasks / r.seconds:,.0f}/s)"]
    for lane in LANES:
        s = r.stats[lane]
        lines.append(
            f"  {lane:<10} " + "  ".join(f"{k} {s[k]:,}" for k in ("submitted", *COUNTERS))
        )
    lines.append(
        f"  log: {sum(r.drop_logs.values()):,} drop warnings (one per drop),"
        f" {len(r.other_logs)} other records"
    )
    if r.rss:
        plateau = max(r.rss[1 : len(r.rss) // 2 + 1]) if len(r.rss) >= 4 else r.rss[0]
        lines.append(
            f"  RSS plateau {plateau:.1f} MB, final {r.rss[-1]:.1f} MB "
            f"({(r.rss[-1] / plateau - 1) * 100:+.1f}%)"
        )
    lines.append("SOAK OK" if r.ok else "SOAK FAILED:\n  " + "\n  ".join(r.problems))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--producers", type=int, default=8)
    parser.add_argument("--waves", type=int, default=10)
    args = parser.parse_args()
    r = run(
        args.tasks, args.producers, args.waves, check_rss=not os.environ.get("OFFLOAD_SANITIZER")
    )
    print(report(r))
    return 0 if r.ok else 1


if __name__ == "__main__":
    sys.exit(main())
