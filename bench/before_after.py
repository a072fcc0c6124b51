"""Spawn speed of two engine builds, same benchmark code, same run: BEFORE vs this tree.

    python bench/before_after.py --before a4ebdaa     # or: make bench-compare BEFORE=a4ebdaa

BEFORE's sources come from `git archive` into build/compare/<commit>/src and are built
into build/compare/<commit>/site (`pip install --target`, once); "after" is the engine
installed in this venv (`make build` of this tree). Every sample is a fresh interpreter
running one offload contender of bench/lanes.py (the engine picked by PYTHONPATH,
checked by its path), the two builds alternating, rotated each round; medians reported.
No task controls are set anywhere: this is the plain spawn path.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import lanes
import report
from common import Benchmark, Sample, make_benchmark

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: (benchmark key in bench/lanes.py, its title, the offload contender compared)
CASES: list[tuple[str, str, str]] = [
    ("loop_spawn", "loop lane: spawn + wait, one burst", "offload loop.spawn"),
    ("loop_spawn_bursts", "loop lane: spawn + wait, bursts of 100", "offload loop.spawn"),
    ("thread_spawn", "thread lane: fire and forget + wait", "offload threads.spawn"),
    ("thread_run", "thread lane: await run, 200 awaiters", "offload await threads.run"),
    ("background_spawn", "background lane: submit from a plain thread", "offload background.spawn"),
]


def _size(n: int, scale: float) -> int:
    unit = lanes.AWAITERS * 10
    return max(unit, int(n * scale) // unit * unit)


def _contenders(key: str, scale: float) -> list[tuple[str, Sample]]:
    if key == "loop_spawn":
        return lanes.loop_lane(_size(50_000, scale), _size(50_000, scale))
    if key == "loop_spawn_bursts":
        return lanes.loop_lane(_size(50_000, scale), 100)
    if key == "thread_spawn":
        return lanes.thread_spawn(_size(100_000, scale))
    if key == "thread_run":
        return lanes.thread_run(_size(20_000, scale))
    return lanes.background(_size(20_000, scale))


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()


def build_before(commit: str) -> tuple[str, Path]:
    """The short hash of `commit` and the site dir its engine is installed in."""
    short = _git("rev-parse", "--short", f"{commit}^{{commit}}")
    base = ROOT / "build" / "compare" / short
    site, stamp = base / "site", base / "built"
    if not stamp.exists():
        src = base / "src"
        src.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", short], cwd=ROOT, check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
        print(f"building the engine of {short} into {site} ...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            + ["--no-deps", "--no-build-isolation", "--upgrade", "--target", str(site), str(src)],
            check=True,
        )
        stamp.touch()
    return short, site


def _sample(site: Path | None, key: str, contender: str, scale: float) -> Sample:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if site is not None:
        env["PYTHONPATH"] = str(site)
    want = str(site) if site is not None else sys.prefix

    def sample() -> float:
        out = subprocess.run(
            [sys.executable, __file__, "--sample", key, contender, str(scale)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        if not result["engine"].startswith(want):
            raise RuntimeError(f"sample ran the engine at {result['engine']}, not under {want}")
        return float(result["value"])

    return sample


def run(rounds: int, scale: float, before: str, only: list[str] | None = None) -> list[Benchmark]:
    short, site = build_before(before)
    after = _git("rev-parse", "--short", "HEAD")
    if _git("status", "--porcelain", "--", "csrc", "src"):
        after += "+uncommitted"
    names = (f"before ({short})", f"after ({after})")
    out = []
    for key, title, contender in CASES:
        if only and key not in only:
            continue
        builds = [
            (names[0], _sample(site, key, contender, scale)),
            (names[1], _sample(None, key, contender, scale)),
        ]
        samples: dict[str, list[float]] = {name: [] for name in names}
        for r in range(rounds):
            for name, sample in builds[r % 2 :] + builds[: r % 2]:
                samples[name].append(sample())
        out.append(
            make_benchmark(
                f"compare_{key}",
                f"{title}: {contender}, no controls, engine before/after",
                "tasks/s" if key != "thread_run" else "calls/s",
                samples,
                pairs=[(names[1], names[0])],
            )
        )
    return out


def _run_one(key: str, contender: str, scale: float) -> None:
    import offload

    sample = dict(_contenders(key, scale))[contender]
    print(json.dumps({"value": sample(), "engine": offload.__file__}))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", default="a4ebdaa", help="the commit to compare against")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--scale", type=float, default=1.0, help="work per sample (lanes.py's)")
    parser.add_argument(
        "--only", help=f"comma-separated keys out of {','.join(c[0] for c in CASES)}"
    )
    parser.add_argument(
        "--sample", nargs=3, metavar=("KEY", "CONTENDER", "SCALE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.sample:
        _run_one(args.sample[0], args.sample[1], float(args.sample[2]))
        return 0
    benches = run(args.rounds, args.scale, args.before, args.only.split(",") if args.only else None)
    print("\n" + report.compare_table({b.key: b.to_json() for b in benches}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
