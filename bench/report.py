"""Print a results JSON as the Markdown tables of docs/benchmarks.md.

python bench/report.py [bench/results.json]
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any


def _num(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def targets(document: dict[str, Any]) -> str:
    lines = ["| target | median (or ratio of medians) | verdict |", "| --- | ---: | --- |"]
    for t in document["targets"]:
        value = f"{t['ratio']:.2f}x" if "ratio" in t else f"{_num(t['value'])} {t['unit']}"
        lines.append(f"| {t['target']} | {value} | {t['verdict']} |")
    return "\n".join(lines)


def compare_table(benches: dict[str, Any]) -> str:
    """The before/after table of bench/before_after.py's benchmarks (keys compare_*):
    medians, their ratio, the median of per-round ratios, and the best samples' ratio."""
    rows = [bench for key, bench in benches.items() if key.startswith("compare_")]
    before, after = rows[0]["contenders"]
    head = f"| no controls set | {before} | {after} | after / before: medians | paired | best"
    lines = [
        head + " | before min – max | after min – max |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for bench in rows:
        b, a = bench["contenders"].values()
        paired = statistics.median(x / y for x, y in zip(a["samples"], b["samples"], strict=True))
        lines.append(
            f"| {bench['title'].split(', no controls')[0]} ({bench['unit']}) | {_num(b['median'])}"
            f" | {_num(a['median'])} | {a['median'] / b['median']:.2f}x | {paired:.2f}x"
            f" | {a['max'] / b['max']:.2f}x | {_num(b['min'])} – {_num(b['max'])}"
            f" | {_num(a['min'])} – {_num(a['max'])} |"
        )
    return "\n".join(lines)


def benchmarks(document: dict[str, Any]) -> str:
    out = []
    for bench in document["benchmarks"].values():
        note = f" ({bench['note']})" if bench["note"] else ""
        out += [f"**{bench['title']}**, {bench['unit']}{note}", ""]
        out += ["| contender | median | min – max |", "| --- | ---: | ---: |"]
        for name, c in bench["contenders"].items():
            out.append(f"| {name} | {_num(c['median'])} | {_num(c['min'])} – {_num(c['max'])} |")
        out += ["", *(f"- {pair}: **{value:.2f}x**" for pair, value in bench["ratios"].items()), ""]
    return "\n".join(out)


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "results.json")
    document = json.loads(path.read_text())
    meta = document["meta"]
    print(
        f"{meta['mode']} run of {meta['date']} (commit {meta['git_commit']}), {meta['seconds']:.0f} s,"
        f" {meta['rounds']} rounds; CPython {meta['python']}, {meta['cpus']} x {meta['cpu']};"
        f" load average before {meta['loadavg_before'][0]:.2f}, after"
        f" {meta['loadavg_after'][0]:.2f}\n"
    )
    print(targets(document) + "\n")
    if any(key.startswith("compare_") for key in document["benchmarks"]):
        print(compare_table(document["benchmarks"]) + "\n")
    print(benchmarks(document))


if __name__ == "__main__":
    main()
