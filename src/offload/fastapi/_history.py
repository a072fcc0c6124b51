"""The dashboard's charts' data: a bounded ring of per-lane samples of `runtime.stats()`.

One `History` per sampled runtime. A daemon thread (`Sampler`) appends one sample every
`interval` seconds, each the change since the previous one (tasks finished, failed and
retried in that interval) plus the gauges at that moment (pending, running, scheduled,
retrying, overrun). At most `keep` samples are kept: memory is bounded whatever the uptime.
A sample holds per lane a list of ints in `SERIES` order (not a dict: 900 samples of four
lanes take about 0.8 MB, and the page's first load is about 0.2 MB).

The same thread also reads the durable queue's depths (`runtime.durable.depths()`, a
store call, never made on the event loop) when the runtime's durable tier is in use;
`History.durable()` gives the latest reading for the dashboard's "Durable queue" panel.

Lock rule: `History._lock` guards `_samples`, `_last`, `_seq` and `_durable`; it is never
held while calling into the runtime (`stats()` and the depths are read before taking it).
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .. import Runtime
from ._durable import depths_dict, durable_of

log = logging.getLogger("offload")

#: Cumulative counters turned into per-interval counts ("finished" sums the three outcomes).
_DELTAS = {
    "finished": ("succeeded", "failed", "cancelled"),
    "failed": ("failed",),
    "retried": ("retried",),
}
#: Gauges copied as they are at sampling time.
_GAUGES = ("pending", "running", "scheduled", "retrying", "overrun")
#: What each lane's list in a sample holds, in order.
SERIES = (*_DELTAS, *_GAUGES)
#: A durable depths reading waits this many times the previous one's duration.
DURABLE_SHARE = 50


def _totals(stats: dict[str, dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per lane: the cumulative counters this module turns into deltas."""
    return {
        lane: {
            key: sum(int(values.get(c, 0)) for c in counters) for key, counters in _DELTAS.items()
        }
        for lane, values in stats.items()
    }


@dataclass
class History:
    """The last `keep` samples of one runtime, oldest first; each has a rising `seq`."""

    interval: float
    keep: int
    _samples: deque[dict[str, Any]] = field(init=False)
    _last: tuple[float, dict[str, dict[str, int]]] | None = field(default=None, init=False)
    _seq: int = field(default=0, init=False)
    _durable: dict[str, Any] | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self._samples = deque(maxlen=self.keep)

    def record(self, stats: dict[str, dict[str, Any]], now: float | None = None) -> None:
        """Add the sample `stats` makes after the previous one (the first one is a baseline)."""
        now = time.monotonic() if now is None else now
        totals = _totals(stats)
        with self._lock:
            last, self._last = self._last, (now, totals)
            if last is None:
                return
            then, before = last
            self._seq += 1
            self._samples.append(
                {
                    "seq": self._seq,
                    "time": time.time(),
                    "dt": max(now - then, 1e-9),
                    "lanes": {
                        lane: _sample_lane(values, totals[lane], before.get(lane, {}))
                        for lane, values in stats.items()
                    },
                }
            )

    def record_durable(self, depths: dict[str, Any] | None) -> None:
        """Keep the latest durable queue reading (`depths_dict` plus its time), or forget it."""
        reading = None if depths is None else {**depths, "time": time.time()}
        with self._lock:
            self._durable = reading

    def durable(self) -> dict[str, Any] | None:
        """The latest durable queue reading, None if none was taken."""
        with self._lock:
            return self._durable

    def since(self, after: int = 0) -> dict[str, Any]:
        """The samples whose `seq` is above `after`, oldest first, as JSON-ready data."""
        with self._lock:
            samples = [s for s in self._samples if s["seq"] > after]
            last = self._seq
        return {
            "interval": self.interval,
            "keep": self.keep,
            "last": last,
            "series": list(SERIES),
            "samples": samples,
        }

    def __len__(self) -> int:
        with self._lock:
            return len(self._samples)


def _sample_lane(
    stats: dict[str, Any], totals: dict[str, int], before: dict[str, int]
) -> list[int]:
    # A counter never goes down; if it seems to (a replaced runtime), count from zero.
    deltas = [max(0, totals[key] - before.get(key, totals[key])) for key in _DELTAS]
    return deltas + [int(stats.get(key, 0)) for key in _GAUGES]


class Sampler:
    """Samples one runtime into a `History` on a daemon thread until stopped or closed.

    Holds the runtime weakly: a runtime dropped without being closed is not kept alive.
    """

    def __init__(self, runtime: Runtime, history: History) -> None:
        self.history = history
        self._runtime = weakref.ref(runtime)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="offload-dashboard-sampler", daemon=True
        )
        self._failed_once = False
        self._durable_failed_once = False
        self._durable_due = 0.0  # monotonic time of the next durable reading

    def start(self) -> None:
        self.sample()  # the baseline, so the first interval already gives a sample
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def sample(self) -> bool:
        """Take one sample now; False once the runtime is gone or closed."""
        runtime = self._runtime()
        if runtime is None or runtime.closed:
            return False
        try:
            stats = runtime.stats()
        except Exception:
            if not self._failed_once:  # once, not every second
                self._failed_once = True
                log.exception("offload dashboard: reading runtime.stats() failed")
            return True
        self.history.record(stats)
        return True

    def sample_durable(self) -> None:
        """Read the durable queue's depths, if the runtime's durable tier is in use.

        Blocks on the store thread (bounded): only ever called on the sampler's thread.
        The query runs on the store's writer thread, between group commits: readings are
        spaced to keep it under 1/DURABLE_SHARE of that thread's time (a store of a
        million tasks is read less often than every interval)."""
        runtime = self._runtime()
        durable = None if runtime is None or runtime.closed else durable_of(runtime)
        if durable is None:
            self.history.record_durable(None)
            return
        start = time.monotonic()
        if start < self._durable_due:
            return
        try:
            depths = durable.depths(timeout=max(5.0, self.history.interval))
        except Exception:
            if not self._durable_failed_once:  # once, not every second
                self._durable_failed_once = True
                log.exception("offload dashboard: reading the durable queue's depths failed")
            self.history.record_durable(None)
            return
        self.history.record_durable(depths_dict(depths))
        self._durable_due = start + (time.monotonic() - start) * DURABLE_SHARE

    def _run(self) -> None:
        while not self._stop.wait(self.history.interval):
            if not self.sample():
                return
            self.sample_durable()


class Samplers:
    """The samplers of one dashboard, one per runtime it has shown, started on first use."""

    def __init__(self, interval: float, history_seconds: float) -> None:
        self.interval = interval
        self.keep = max(1, math.ceil(history_seconds / interval))
        self._by_runtime: weakref.WeakKeyDictionary[Runtime, Sampler] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def history(self, runtime: Runtime) -> History:
        """The runtime's history, its sampler started (again) if it is not running."""
        with self._lock:
            sampler = self._by_runtime.get(runtime)
            if sampler is not None and (sampler.alive or runtime.closed):
                return sampler.history
            if runtime.closed:
                return History(self.interval, self.keep)
            history = sampler.history if sampler is not None else History(self.interval, self.keep)
            sampler = Sampler(runtime, history)
            self._by_runtime[runtime] = sampler
            sampler.start()
        return history

    def stop(self, runtime: Runtime, timeout: float | None = None) -> None:
        with self._lock:
            sampler = self._by_runtime.get(runtime)
        if sampler is not None:
            sampler.stop(timeout)


def checked_interval(name: str, value: float, *, minimum: float = 0.0) -> float:
    """`value` as a float > minimum, else a ValueError naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, not {value!r}")
    if not math.isfinite(value) or value <= minimum:
        raise ValueError(f"{name} must be a finite number of seconds > {minimum:g}, got {value!r}")
    return float(value)


__all__ = ["SERIES", "History", "Sampler", "Samplers", "checked_interval"]
