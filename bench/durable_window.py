"""The commit window of a durable spawn: from `spawn()` returning to its record being
committed (issue 13: "document the window ... and measure it").

A producer-only runtime (`durable_concurrency=0`) on a fresh SQLite store; each sampled
spawn registers a callback that the store thread runs right after the commit that
made it durable (the same hook `await task.persisted()` waits on). Two loads:

* steady: 2,000 spawns, one every millisecond (a busy app);
* burst: 20,000 spawns in a tight loop from one thread (the worst case: the producer
  holds the GIL, which the store thread needs between its SQLite calls).

One sample in 10 (steady) or 50 (burst) is timed. Prints p50 / p99 / max in ms for
durability "normal" and "full". Usage: python bench/durable_window.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import offload

sys.path.insert(0, str(Path(__file__).resolve().parent))
from durable_peers import work


def measure(rt: offload.Runtime, n: int, pause: float, every: int) -> list[float]:
    thread = rt.durable._require_thread()
    lat: list[float] = []
    for i in range(n):
        handle = rt.durable.spawn(work, 0.0)
        if i % every == 0:
            t0 = time.perf_counter()
            thread.when_settled(handle, lambda t0=t0: lat.append(time.perf_counter() - t0))
        if pause:
            time.sleep(pause)
    rt.durable.flush_sync(60)
    return lat


def row(name: str, lat: list[float]) -> str:
    lat = sorted(lat)
    q = statistics.quantiles(lat, n=100)
    return f"| {name} | {q[49] * 1e3:.3f} | {q[98] * 1e3:.2f} | {lat[-1] * 1e3:.2f} |"


def main() -> None:
    print("| durability, load | p50 ms | p99 ms | max ms |")
    print("| --- | ---: | ---: | ---: |")
    for durability in ("normal", "full"):
        with tempfile.TemporaryDirectory() as tmp:
            store = "sqlite:///" + str(Path(tmp) / "window.db")
            rt = offload.Runtime(store=store, durable_concurrency=0, durability=durability)
            rt.durable.spawn(work, 0.0).wait_persisted(10)
            print(row(f"{durability}, steady 1,000/s", measure(rt, 2000, 0.001, 10)), flush=True)
            print(row(f"{durability}, burst of 20,000", measure(rt, 20000, 0.0, 50)), flush=True)
            rt.close(10)


if __name__ == "__main__":
    main()
