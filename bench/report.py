"""Print a results JSON as the Markdown tables of docs/benchmarks.md.

python bench/report.py [bench/results.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _num(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def targets(document: dict[str, Any]) -> str:
    lines = ["| target | ratio of medians | verdict |", "| --- | ---: | --- |"]
    for t in document["targets"]:
        lines.append(f"| {t['target']} | {t['ratio']:.2f}x | {t['verdict']} |")
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
    print(benchmarks(document))


if __name__ == "__main__":
    main()
