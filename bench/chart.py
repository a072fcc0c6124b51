"""Draw the results JSON as one PNG (matplotlib, Agg backend): medians with min-max whiskers.

python bench/chart.py bench/results.json   # redraw bench/results.png
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import NullFormatter

OFFLOAD, OTHER = "#d62728", "#7f7f7f"
Row = tuple[str, float, float, float]  # label, median, min, max


def _rows(bench: dict[str, Any], prefix: str = "") -> list[Row]:
    return [
        (prefix + name, c["median"], c["min"], c["max"]) for name, c in bench["contenders"].items()
    ]


def _bars(ax: Axes, title: str, unit: str, rows: list[Row], *, log: bool = False) -> None:
    labels = [r[0] for r in rows][::-1]
    med = [r[1] for r in rows][::-1]
    err = [[r[1] - r[2] for r in rows][::-1], [r[3] - r[1] for r in rows][::-1]]
    colors = [OFFLOAD if "offload" in label else OTHER for label in labels]
    ax.barh(labels, med, xerr=err, color=colors, capsize=3, error_kw={"lw": 0.8})
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    tops = [r[3] for r in rows][::-1]
    for y, (value, top) in enumerate(zip(med, tops, strict=True)):
        ax.annotate(
            f"{value:,.0f}" if value >= 100 else f"{value:.3g}",
            (top, y),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=7,
        )
    ax.set_title(title, fontsize=9, loc="left")
    ax.set_xlabel(unit + (" (log)" if log else ""), fontsize=8)
    ax.tick_params(labelsize=7)
    ax.margins(x=0.25)


def _scaling(ax: Axes, benches: dict[str, Any]) -> None:
    keys = sorted(
        (k for k in benches if k.startswith("scaling_producers_")),
        key=lambda k: int(k.rsplit("_", 1)[1]),
    )
    threads = [int(k.rsplit("_", 1)[1]) for k in keys]
    for name in benches[keys[0]]["contenders"]:
        c = [benches[k]["contenders"][name] for k in keys]
        ax.errorbar(
            threads,
            [x["median"] for x in c],
            yerr=[[x["median"] - x["min"] for x in c], [x["max"] - x["median"] for x in c]],
            marker="o",
            capsize=3,
            label=name,
            color=OFFLOAD if "offload" in name else OTHER,
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(threads, [str(t) for t in threads])
    ax.set_title("scaling: threads.spawn from N producer threads + wait", fontsize=9, loc="left")
    ax.set_xlabel("producer threads", fontsize=8)
    ax.set_ylabel("tasks/s (log)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)


def draw(document: dict[str, Any], path: Path) -> None:
    benches: dict[str, Any] = document["benchmarks"]
    panels: list[tuple[str, Any]] = []
    for key in (
        "loop_spawn",
        "loop_spawn_bursts",
        "thread_run",
        "thread_run_1cpu",
        "thread_spawn",
        "background_spawn",
        "process_run",
        "process_spawn",
    ):
        if key in benches:
            panels.append(("bars_log", key))
    for work in ("async", "blocking"):
        if f"e2e_{work}_rps" in benches:
            panels.append(("e2e", work))
    if "memory_rss" in benches:
        panels.append(("memory", None))
    if "scaling_producers_1" in benches:
        panels.append(("scaling", None))
    if any(k.startswith("latency_") for k in benches):
        panels.append(("latency", None))
    if "scheduled_memory_tracemalloc" in benches:
        panels.append(("scheduled", None))
    if "timer_lateness_p99" in benches:
        panels.append(("bars_log", "timer_lateness_p99"))
    if any(k.startswith("compare_") for k in benches):
        panels.append(("compare", None))
    if "durable_enqueue" in benches:
        panels.append(("bars_log", "durable_enqueue"))
    for kind, first in (
        ("durable_e2e", "durable_e2e_1"),
        ("durable_latency", "durable_latency_p50"),
    ):
        if first in benches:
            panels.append((kind, None))
    if "durable_rss" in benches:
        panels.append(("durable_rss", None))
    if "redis_enqueue" in benches:
        panels.append(("bars_log", "redis_enqueue"))
    for kind, first in (
        ("redis_e2e", "redis_e2e_1"),
        ("redis_sleep", "redis_sleep"),
        ("redis_latency", "redis_latency_p50"),
    ):
        if first in benches:
            panels.append((kind, None))

    cols = 2
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(15, 3.1 * rows), squeeze=False)
    for ax, (kind, arg) in zip(axes.flat, panels):
        if kind == "bars_log":
            b = benches[arg]
            _bars(ax, b["title"], b["unit"], _rows(b), log=True)
        elif kind == "e2e":
            b = benches[f"e2e_{arg}_rps"]
            ratios = {k.split(" / ")[0]: v for k, v in b["ratios"].items()}
            labelled = [
                (f"{n} ({ratios[n]:.2f}x)" if n in ratios else n, med, lo, hi)
                for n, med, lo, hi in _rows(b)
            ]
            _bars(ax, b["title"] + " (ratio to plain)", b["unit"], labelled)
        elif kind == "memory":
            memory = _rows(benches["memory_rss"], "RSS: ")
            if "memory_tracemalloc" in benches:
                memory += _rows(benches["memory_tracemalloc"], "tracemalloc: ")
            _bars(ax, "memory per pending task (100k pending)", "bytes/task", memory)
        elif kind == "scaling":
            _scaling(ax, benches)
        elif kind == "latency":
            waits: list[Row] = []
            for key, b in benches.items():
                if key.startswith("latency_"):
                    _, neighbour, q = key.split("_")
                    waits += _rows(b, f"{q}, {neighbour}: ")
            _bars(
                ax,
                "queue wait of a trivial task, with a CPU-bound neighbour",
                "µs",
                waits,
                log=True,
            )
        elif kind == "scheduled":
            bars = _rows(benches["scheduled_memory_tracemalloc"], "tracemalloc: ")
            if "scheduled_memory_rss" in benches:
                bars += _rows(benches["scheduled_memory_rss"], "RSS: ")
            _bars(ax, "100k tasks delayed 3600 s vs pending", "bytes/task", bars)
        elif kind == "compare":
            bars = []
            for key, b in benches.items():
                if key.startswith("compare_"):
                    bars += _rows(b, key.removeprefix("compare_") + ", ")
            _bars(ax, "spawn speed, no controls: engine before/after", "tasks/s", bars, log=True)
        elif kind == "durable_e2e":
            bars = []
            for n in (1, 3):
                if f"durable_e2e_{n}" in benches:
                    bars += _rows(benches[f"durable_e2e_{n}"], f"{n} proc: ")
            _bars(
                ax, "durable end to end: no-op tasks, worker processes", "tasks/s", bars, log=True
            )
        elif kind == "durable_latency":
            bars = []
            for q in ("p50", "p99"):
                bars += _rows(benches[f"durable_latency_{q}"], f"{q}: ")
            _bars(ax, "durable enqueue-to-start latency, 1 worker process", "ms", bars, log=True)
        elif kind == "durable_rss":
            b = benches["durable_rss"]
            _bars(ax, b["title"], b["unit"], _rows(b, "offload "))
        elif kind == "redis_e2e":
            bars = []
            for n in (1, 4):
                if f"redis_e2e_{n}" in benches:
                    bars += _rows(benches[f"redis_e2e_{n}"], f"{n} proc: ")
            _bars(
                ax,
                "Redis, end to end: queued no-op tasks, worker processes",
                "tasks/s",
                bars,
                log=True,
            )
        elif kind == "redis_sleep":
            b = benches["redis_sleep"]
            _bars(ax, b["title"], b["unit"], _rows(b))
        elif kind == "redis_latency":
            bars = []
            for q in ("p50", "p99"):
                bars += _rows(benches[f"redis_latency_{q}"], f"{q}: ")
            title = benches["redis_latency_p50"]["title"].replace(" p50", "")
            _bars(ax, title, "ms", bars)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    meta = document["meta"]
    fig.suptitle(
        f"offload benchmarks ({meta['mode']} run, {meta['date'][:10]}): CPython {meta['python']},"
        f" {meta['cpus']} CPUs ({meta['cpu']}); medians of {meta['rounds']} interleaved rounds,"
        " whiskers min-max; red = offload",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / (3.1 * rows)))  # room for the title
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    source = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "results.json")
    draw(json.loads(source.read_text()), source.with_suffix(".png"))
