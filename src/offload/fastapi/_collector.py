"""A prometheus_client Collector that reads `Runtime.stats()` (and `attempts()`) at scrape time,
and the durable queue's depths when the runtime's durable tier is in use."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)

from .. import Runtime
from ._durable import durable_of

if TYPE_CHECKING:
    from ..durable._store import Depths

log = logging.getLogger("offload")

_COUNTERS = {
    "submitted": "Tasks accepted or refused by the lane (every spawn/run call).",
    "rejected": "Tasks refused because the lane was full (offload.Full raised).",
    "dropped": "Tasks dropped because the lane was full (on_full='drop').",
    "retried": "Attempts that failed and were scheduled again (retries=, offload.Retry).",
    "timed_out": "Tasks whose timeout= expired.",
}
_OUTCOMES = ("succeeded", "failed", "cancelled")
_GAUGES = {
    "pending": "Tasks accepted and not started yet.",
    "running": "Tasks running now.",
    "scheduled": "Tasks waiting for their delay= or at= time.",
    "retrying": "Tasks waiting for their next attempt.",
    "overrun": "Threads-lane calls still running after their task timed out.",
}
_SCHEDULES = {
    "runs": "Runs a periodic schedule started (offload.every, cron, @periodic).",
    "skipped": "Runs a periodic schedule skipped because the previous one was still going.",
}
_ATTEMPTS = {
    "attempts": "Attempts started, per task name (tasks with controls only).",
    "retries": "Retries scheduled, per task name (tasks with controls only).",
}
_LATENCIES = {
    "queue_wait": "Time from acceptance to start, in seconds.",
    "run_time": "Time from start to finish, in seconds.",
}
_QUANTILES = {"p50": "0.5", "p90": "0.9", "p99": "0.99"}
_DURABLE_COUNTERS = {
    "committed": "Durable tasks this process spawned and committed to the store.",
    "started": "Durable attempts this process started.",
    "finished": "Durable attempts this process finished.",
}
#: How long a scrape waits for the store's answer before leaving the depths out.
DEPTHS_TIMEOUT = 5.0


class OffloadCollector:
    """Exposes a runtime's per-lane counters, gauges and latency quantiles, and its
    per-name attempts and retries (tasks with controls).

    `runtime` is a Runtime or a zero-argument callable returning one (read on each scrape).
    Register it in your own registry (`REGISTRY.register(OffloadCollector(rt))`) if you
    already serve /metrics; otherwise mount `metrics_router()`.

    When the runtime's durable tier is in use, also the queue's depths (read from the
    store: a call to the store thread, at most DEPTHS_TIMEOUT seconds) and this
    process's durable counters.
    """

    def __init__(self, runtime: Runtime | Callable[[], Runtime], prefix: str = "offload") -> None:
        self._runtime = runtime
        self._prefix = prefix
        #: Depths read beforehand (metrics_router reads them without blocking its loop):
        #: when `_prefetched`, collect() uses `_depths` (None: leave the gauges out).
        self._prefetched = False
        self._depths: Depths | None = None

    def collect(self) -> Iterator[Metric]:
        runtime = self._runtime if isinstance(self._runtime, Runtime) else self._runtime()
        stats = runtime.stats()
        yield from self._counters(stats)
        yield self._outcomes(stats)
        yield from self._gauges(stats)
        yield from self._latencies(stats)
        yield from self._attempts(runtime)
        yield from self._schedules(runtime)
        yield from self._durable(runtime)

    def _counters(self, stats: dict[str, dict[str, Any]]) -> Iterator[Metric]:
        for key, doc in _COUNTERS.items():
            family = CounterMetricFamily(f"{self._prefix}_tasks_{key}", doc, labels=["lane"])
            for lane, values in stats.items():
                family.add_metric([lane], values.get(key, 0))
            yield family

    def _outcomes(self, stats: dict[str, dict[str, Any]]) -> Metric:
        family = CounterMetricFamily(
            f"{self._prefix}_tasks_finished",
            "Tasks that finished, by outcome (succeeded, failed, cancelled).",
            labels=["lane", "outcome"],
        )
        for lane, values in stats.items():
            for outcome in _OUTCOMES:
                family.add_metric([lane, outcome], values.get(outcome, 0))
        return family

    def _gauges(self, stats: dict[str, dict[str, Any]]) -> Iterator[Metric]:
        for key, doc in _GAUGES.items():
            family = GaugeMetricFamily(f"{self._prefix}_tasks_{key}", doc, labels=["lane"])
            for lane, values in stats.items():
                family.add_metric([lane], values.get(key, 0))
            yield family

    def _latencies(self, stats: dict[str, dict[str, Any]]) -> Iterator[Metric]:
        # A summary: the engine keeps a histogram and reports quantiles and a count.
        for key, doc in _LATENCIES.items():
            name = f"{self._prefix}_task_{key}_seconds"
            family = Metric(name, doc, "summary")
            for lane, values in stats.items():
                latency = values.get(key) or {}
                for field, quantile in _QUANTILES.items():
                    family.add_sample(
                        name, {"lane": lane, "quantile": quantile}, latency.get(field, 0.0)
                    )
                family.add_sample(f"{name}_count", {"lane": lane}, latency.get("count", 0))
            yield family

    def _attempts(self, runtime: Runtime) -> Iterator[Metric]:
        by_name = runtime.attempts()
        for key, doc in _ATTEMPTS.items():
            family = CounterMetricFamily(f"{self._prefix}_task_{key}", doc, labels=["name"])
            for name, values in sorted(by_name.items()):
                family.add_metric([name], values.get(key, 0))
            yield family

    def _schedules(self, runtime: Runtime) -> Iterator[Metric]:
        schedules = runtime.schedules()
        for key, doc in _SCHEDULES.items():
            family = CounterMetricFamily(f"{self._prefix}_schedule_{key}", doc, labels=["schedule"])
            for schedule in schedules:
                family.add_metric([schedule.name], getattr(schedule, key))
            yield family

    def _durable(self, runtime: Runtime) -> Iterator[Metric]:
        durable = durable_of(runtime)
        if durable is None:
            return
        stats = durable.stats()
        for key, doc in _DURABLE_COUNTERS.items():
            yield CounterMetricFamily(f"{self._prefix}_durable_{key}", doc, value=stats[key])
        depths = self._depths
        if not self._prefetched:
            try:
                depths = durable.depths(timeout=DEPTHS_TIMEOUT)
            except Exception:
                log.exception("offload metrics: reading the durable queue's depths failed")
                return
        if depths is not None:
            yield from self._depth_gauges(depths)

    def _depth_gauges(self, depths: Depths) -> Iterator[Metric]:
        tasks = GaugeMetricFamily(
            f"{self._prefix}_durable_tasks",
            "Durable tasks in the store by state (queued, running, succeeded, dead, cancelled).",
            labels=["state"],
        )
        for state, count in depths.by_state.items():
            tasks.add_metric([state], count)
        yield tasks
        yield GaugeMetricFamily(
            f"{self._prefix}_durable_ready",
            "Durable tasks queued and due now.",
            value=depths.ready,
        )
        yield GaugeMetricFamily(
            f"{self._prefix}_durable_scheduled",
            "Durable tasks queued with a future time (delay=, at=, a retry's backoff).",
            value=depths.scheduled,
        )
        age = depths.oldest_ready_age
        yield GaugeMetricFamily(
            f"{self._prefix}_durable_oldest_ready_seconds",
            "How long the oldest ready durable task has waited (0 when none is ready).",
            value=0.0 if age is None else age,
        )
        leases = GaugeMetricFamily(
            f"{self._prefix}_durable_leases",
            "Running durable tasks by lease: live, or expired (a live worker reclaims these).",
            labels=["kind"],
        )
        leases.add_metric(["live"], depths.leases)
        leases.add_metric(["expired"], depths.expired_leases)
        yield leases
