"""A prometheus_client Collector that reads `Runtime.stats()` (and `attempts()`) at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)

from .. import Runtime

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


class OffloadCollector:
    """Exposes a runtime's per-lane counters, gauges and latency quantiles, and its
    per-name attempts and retries (tasks with controls).

    `runtime` is a Runtime or a zero-argument callable returning one (read on each scrape).
    Register it in your own registry (`REGISTRY.register(OffloadCollector(rt))`) if you
    already serve /metrics; otherwise mount `metrics_router()`.
    """

    def __init__(self, runtime: Runtime | Callable[[], Runtime], prefix: str = "offload") -> None:
        self._runtime = runtime
        self._prefix = prefix

    def collect(self) -> Iterator[Metric]:
        runtime = self._runtime if isinstance(self._runtime, Runtime) else self._runtime()
        stats = runtime.stats()
        yield from self._counters(stats)
        yield self._outcomes(stats)
        yield from self._gauges(stats)
        yield from self._latencies(stats)
        yield from self._attempts(runtime)
        yield from self._schedules(runtime)

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
