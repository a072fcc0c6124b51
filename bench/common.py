"""Shared pieces: the trivial work every contender does, interleaved rounds, summaries.

Every benchmark is a list of contenders doing the same work. `interleave` runs them
A B C, B C A, C A B, ... (each round rotated by one), so slow drifts of this shared,
noisy machine hit every contender alike; each contender's value is the median of its
rounds, reported with min and max, and ratios are computed from those medians.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

#: One sample of a contender: runs the work once (warm-up included, untimed) and
#: returns the measured value in the benchmark's unit.
Sample = Callable[[], float]


# --- the work: module-level so that process pools can pickle it -----------------------
def f() -> None:
    pass


def inc(x: int) -> int:
    return x + 1


async def noop() -> None:
    pass


# --- measuring ---------------------------------------------------------------------------
def rate(n: int, start: float) -> float:
    """Items per second since `start` (a `time.perf_counter()` reading)."""
    return n / (time.perf_counter() - start)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


_T = TypeVar("_T")


def interleave(
    contenders: Sequence[tuple[str, Callable[[], _T]]], rounds: int
) -> dict[str, list[_T]]:
    samples: dict[str, list[_T]] = {name: [] for name, _ in contenders}
    for r in range(rounds):
        shift = r % len(contenders)
        for name, sample in [*contenders[shift:], *contenders[:shift]]:
            gc.collect()
            samples[name].append(sample())
    return samples


# --- results -------------------------------------------------------------------------------
@dataclass
class Benchmark:
    """One comparison: contenders' samples in one unit, plus ratios of medians."""

    key: str
    title: str
    unit: str
    higher_is_better: bool
    samples: dict[str, list[float]]
    #: (numerator, denominator) contender names; the ratio is median / median.
    ratio_pairs: list[tuple[str, str]] = field(default_factory=list)
    note: str = ""

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])

    def ratio(self, num: str, den: str) -> float:
        return self.median(num) / self.median(den)

    def paired_ratio(self, num: str, den: str) -> float:
        """The median of each round's num / den (the two ran back to back in a round)."""
        rounds = zip(self.samples[num], self.samples[den], strict=True)
        return statistics.median(a / b for a, b in rounds)

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "note": self.note,
            "contenders": {
                name: {
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                    "samples": values,
                }
                for name, values in self.samples.items()
            },
            "ratios": {f"{a} / {b}": self.ratio(a, b) for a, b in self.ratio_pairs},
        }

    def print(self) -> None:
        print(f"\n== {self.title} [{self.unit}]" + (f"  ({self.note})" if self.note else ""))
        width = max(len(name) for name in self.samples) + 2
        for name, values in self.samples.items():
            print(
                f"  {name:<{width}}{_fmt(statistics.median(values)):>12}"
                f"   min {_fmt(min(values)):>10}   max {_fmt(max(values)):>10}"
            )
        for a, b in self.ratio_pairs:
            print(f"  {a} / {b}: {self.ratio(a, b):.2f}x")
        sys.stdout.flush()


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def run_benchmark(
    key: str,
    title: str,
    unit: str,
    contenders: Sequence[tuple[str, Sample]],
    rounds: int,
    *,
    baseline: str | None = None,
    pairs: list[tuple[str, str]] | None = None,
    higher_is_better: bool = True,
    note: str = "",
) -> Benchmark:
    """Interleave the contenders. Ratios: `pairs` if given; else, with `baseline`, each
    contender against it; else the first contender against each other one."""
    samples = interleave(contenders, rounds)
    return make_benchmark(key, title, unit, samples, baseline, pairs, higher_is_better, note)


def make_benchmark(
    key: str,
    title: str,
    unit: str,
    samples: dict[str, list[float]],
    baseline: str | None = None,
    pairs: list[tuple[str, str]] | None = None,
    higher_is_better: bool = True,
    note: str = "",
) -> Benchmark:
    names = list(samples)
    if pairs is None:
        if baseline is None:
            pairs = [(names[0], other) for other in names[1:]]
        else:
            pairs = [(name, baseline) for name in names if name != baseline]
    bench = Benchmark(key, title, unit, higher_is_better, samples, pairs, note)
    bench.print()
    return bench
