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


def scheduled_table(benches: dict[str, Any], mode: str) -> str:
    """bench/timers.py's memory rows as form | held | beyond pending | left after cancel."""
    c = benches[f"scheduled_memory_{mode}"]["contenders"]
    lines = ["| form | held | beyond pending | left after cancel |", "| --- | ---: | ---: | ---: |"]
    for form in ("pending", "shared view", "options per call"):
        beyond = c.get(f"{form}, beyond pending")
        lines.append(
            f"| {form} | {_num(c[form]['median'])} | {_num(beyond['median']) if beyond else ''}"
            f" | {_num(c[f'{form}, left after cancel']['median'])} |"
        )
    return "\n".join(lines)


def lateness_table(benches: dict[str, Any]) -> str:
    """bench/timers.py's lateness rows: idle and busy p50 / p99 / max side by side, ms."""
    stats = [benches[f"timer_lateness_{q}"]["contenders"] for q in ("p50", "p99", "max")]
    head = "| where the delayed code runs | loop | idle p50 | idle p99 | idle max | busy p50"
    lines = [
        head + " | busy p99 | busy max |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in stats[0]:
        if not name.endswith(("idle loop", "idle uvloop")):
            continue
        where, kind = name.rsplit(", idle ", 1)
        busy = f"{where}, busy {kind}"
        cells = [_num(s[n]["median"]) for n in (name, busy) for s in stats]
        lines.append(f"| {where} | {'asyncio' if kind == 'loop' else kind} | {' | '.join(cells)} |")
    return "\n".join(lines)


def durable_table(benches: dict[str, Any]) -> str:
    """bench/durable.py's rows: metric x contender, per durability, and how many times
    better offload is (throughput: offload / peer; latency: peer / offload)."""
    metrics = [
        ("durable_enqueue", "enqueue, tasks/s"),
        ("durable_e2e_1", "end to end, 1 worker process, tasks/s"),
        ("durable_e2e_3", "end to end, 3 worker processes, tasks/s"),
        ("durable_latency_p50", "enqueue-to-start p50, ms"),
        ("durable_latency_p99", "enqueue-to-start p99, ms"),
    ]
    peers = ("Huey", "litequeue")
    lines = [
        "| durability | metric | offload | Huey | litequeue | vs Huey | vs litequeue |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for durability in ("normal", "full"):
        for key, label in metrics:
            if key not in benches:
                continue
            bench = benches[key]
            c = bench["contenders"]
            names = ("offload", *peers)
            med = {n: c[f"{n}, {durability}"]["median"] for n in names if f"{n}, {durability}" in c}
            cells = [_num(med[n]) if n in med else "" for n in names]
            for p in peers:
                if p not in med or "offload" not in med:
                    cells.append("")
                elif bench["higher_is_better"]:
                    cells.append(f"{med['offload'] / med[p]:.1f}x")
                else:
                    cells.append(f"{med[p] / med['offload']:.1f}x")
            lines.append(f"| {durability} | {label} | {' | '.join(cells)} |")
    return "\n".join(lines)


def durable_rss_table(benches: dict[str, Any]) -> str:
    """bench/durable.py's RSS rows (MB)."""
    bench = benches["durable_rss"]
    lines = ["| offload, durability normal | MB |", "| --- | ---: |"]
    lines += [f"| {name} | {_num(c['median'])} |" for name, c in bench["contenders"].items()]
    return "\n".join(lines)


REDIS_CONTENDERS = ("offload", "streaQ", "SAQ", "taskiq-redis", "arq", "Celery")


def redis_table(benches: dict[str, Any]) -> str:
    """bench/redis_bench.py's rows: metric x contender (medians), and offload against
    the best peer of the row (throughput: offload / best; time: best / offload)."""
    metrics = [
        ("redis_enqueue", "enqueue, tasks/s"),
        ("redis_e2e_1", "end to end, 1 worker process, tasks/s"),
        ("redis_e2e_4", "end to end, 4 worker processes, tasks/s"),
        ("redis_sleep", "sleep(1) tasks, concurrency 40, s"),
        ("redis_latency_p50", "enqueue-to-start p50 at 50% load, ms"),
        ("redis_latency_p99", "enqueue-to-start p99 at 50% load, ms"),
    ]
    lines = [
        f"| metric | {' | '.join(REDIS_CONTENDERS)} | offload vs the best peer |",
        "| --- |" + " ---: |" * (len(REDIS_CONTENDERS) + 1),
    ]
    for key, label in metrics:
        if key not in benches:
            continue
        bench = benches[key]
        med = {n: c["median"] for n, c in bench["contenders"].items()}
        cells = [_num(med[n]) if n in med else "-" for n in REDIS_CONTENDERS]
        peers = {n: v for n, v in med.items() if n != "offload"}
        versus = ""
        if "offload" in med and peers:
            if bench["higher_is_better"]:
                best = max(peers, key=peers.__getitem__)
                versus = f"{med['offload'] / peers[best]:.2f}x ({best})"
            else:
                best = min(peers, key=peers.__getitem__)
                versus = f"{peers[best] / med['offload']:.2f}x ({best})"
        lines.append(f"| {label} | {' | '.join(cells)} | {versus} |")
    return "\n".join(lines)


def redis_meta_table(meta: dict[str, Any]) -> str:
    """The Redis group's contenders: packages and how each enqueues a batch."""
    lines = ["| contender | packages | enqueue mode |", "| --- | --- | --- |"]
    for name, mode in meta["modes"].items():
        packages = ", ".join(f"{d} {v}" for d, v in meta["versions"].get(name, {}).items())
        lines.append(f"| {name} | {packages} | {mode} |")
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
    benches = document["benchmarks"]
    if any(key.startswith("compare_") for key in benches):
        print(compare_table(benches) + "\n")
    for mode in ("tracemalloc", "rss"):
        if f"scheduled_memory_{mode}" in benches:
            print(f"scheduled tasks ({mode}), bytes/task:\n\n{scheduled_table(benches, mode)}\n")
    if "timer_lateness_p99" in benches:
        print(f"timer lateness, ms:\n\n{lateness_table(benches)}\n")
    if "durable_enqueue" in benches:
        print(f"durable tasks:\n\n{durable_table(benches)}\n")
    if "durable_rss" in benches:
        print(f"durable tasks, memory:\n\n{durable_rss_table(benches)}\n")
    if any(key.startswith("redis_") for key in benches):
        print(f"durable tasks on Redis:\n\n{redis_table(benches)}\n")
    if "redis" in meta:
        print(f"{redis_meta_table(meta['redis'])}\n")
        for failure in meta["redis"]["failures"]:
            print(f"- failed: {failure['contender']}, {failure['phase']}: {failure['reason']}")
        print()
    print(benchmarks(document))


if __name__ == "__main__":
    main()
